"""Just enough of a WordNet 3.0 reader for :mod:`experiments.category_lists`: synsets from the
``data.*`` files, hyponym / instance trees, sense order and tag counts from ``index.sense``."""

from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass, field

from bagofdims.errors import NotFound


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
        # adjective offset -> (type "a"/"s", words, attribute noun offsets, similar-to offsets)
        self.adj: dict[str, tuple[str, list[str], list[str], list[str]]] = {}
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
                    if pos == "a":  # head/satellite type, attribute nouns (=), similar-to (&)
                        ptrs = [(f[j], f[j + 1]) for j in range(5 + 2 * n, 5 + 2 * n + 4 * int(f[4 + 2 * n]), 4)]
                        self.adj[f[0]] = (f[2], [w.lower() for w in words],
                                          [o for sym, o in ptrs if sym == "="], [o for sym, o in ptrs if sym == "&"])
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
                if pos in ("n", "v", "a"):
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
        raise NotFound(f"WordNet has no synset {name!r}; check the name (lemma.pos.NN) against "
                       "index.sense.")

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
