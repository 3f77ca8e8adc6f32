"""The text the top activating contexts are read from, named by one ``--corpus`` string.

- ``wiki`` / ``bbc``: the packaged Wikipedia summaries / BBC articles;
- ``hf:NAME[:CONFIG][@SPLIT][#COLUMN]``: a ``datasets`` dataset on the hub, streamed (only the
  first ``n_docs`` texts are downloaded); ``NAME`` may also be a local folder of data files;
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, with optional
  ``@SPLIT`` and ``#COLUMN``;
- a ``.parquet``, ``.jsonl``, ``.json`` or ``.csv`` data file (``#COLUMN`` optional), read by
  ``datasets.load_dataset(<format>, data_files=...)``, streamed;
- any other file: one text per line.

The text column is ``#COLUMN`` or else the dataset's only string column; with several, the error
lists them. Empty texts are skipped, so ``n_docs`` counts texts with content. :attr:`Corpus.key`
names the corpus in the contexts file's settings, so a resume over another corpus is refused.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from bagofdims.errors import InvalidArgument, MissingFile

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
HUB = "hf:"


@dataclass(frozen=True)
class Corpus:
    """A parsed ``--corpus`` value (nothing is read until :meth:`texts`)."""

    kind: str  # packaged | hub | disk | files | lines
    name: str  # packaged source, hub name, or an absolute path
    config: str | None = None
    split: str | None = None
    column: str | None = None

    @property
    def key(self) -> str:
        """The corpus as one string (stored in the contexts' settings)."""
        out = (HUB if self.kind == "hub" else "") + self.name
        out += f":{self.config}" if self.config else ""
        out += f"@{self.split}" if self.split else ""
        return out + (f"#{self.column}" if self.column else "")

    def texts(self, n_docs: int) -> list[str]:
        """The first ``n_docs`` non-empty texts."""
        if n_docs < 1:
            raise InvalidArgument(f"n_docs must be at least 1, got {n_docs}.")
        if self.kind == "packaged":
            from bagofdims.text import english_documents

            return english_documents(self.name, n=None, min_chars=200)[:n_docs]
        if self.kind == "lines":
            lines = Path(self.name).read_text(encoding="utf-8").splitlines()
            texts = [t.strip() for t in lines if t.strip()][:n_docs]
        else:
            texts = _dataset_texts(self, n_docs)
        if not texts:
            raise InvalidArgument(f"--corpus {self.key} holds no text; pass a corpus with some.")
        return texts


def parse_corpus(spec: str) -> Corpus:
    """A :class:`Corpus` from a ``--corpus`` string; paths must exist (nothing else is checked)."""
    from bagofdims.text import SOURCES

    spec = str(spec).strip()
    if spec in SOURCES:
        return Corpus("packaged", spec)
    if spec.startswith(HUB):
        rest, column = _cut(spec, spec[len(HUB):], "#")
        rest, split = _cut(spec, rest, "@")
        name, config = _cut(spec, rest, ":")
        if not name:
            raise InvalidArgument(f"--corpus {spec!r} names no dataset; use "
                                  "hf:NAME[:CONFIG][@SPLIT][#COLUMN], e.g. hf:wikitext:wikitext-2-raw-v1.")
        if config is None and _saved(Path(name)):  # hf:FOLDER of save_to_disk
            return Corpus("disk", str(Path(name).resolve()), None, split, column)
        return Corpus("hub", name, config, split, column)
    if Path(spec).exists():  # a path that happens to hold '@' or '#'
        path, split, column = Path(spec), None, None
    else:
        rest, column = _cut(spec, spec, "#")
        rest, split = _cut(spec, rest, "@")
        path = Path(rest)
        if not path.exists():
            raise InvalidArgument(
                f"--corpus {spec!r} is neither {', '.join(SOURCES)}, nor hf:NAME (a datasets "
                "dataset), nor an existing file or folder; pass one of those.")
    path = path.resolve()
    if path.is_dir():
        if not _saved(path):
            raise InvalidArgument(f"--corpus {path} is a folder but not one written by "
                                  "save_to_disk; for a folder of data files use hf:{path}.")
        return Corpus("disk", str(path), None, split, column)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        if split or column:
            raise InvalidArgument(f"--corpus {spec!r}: @SPLIT and #COLUMN apply to datasets; a "
                                  f"{path.suffix or 'plain'} file is read as one text per line.")
        return Corpus("lines", str(path))
    return Corpus("files", str(path), None, split, column)


def corpus_texts(corpus: str = "wiki", n_docs: int = 200) -> list[str]:
    """The first ``n_docs`` texts of a ``--corpus`` value (see the module's list)."""
    return parse_corpus(corpus).texts(n_docs)


def _saved(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``save_to_disk``."""
    return path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json"))


def _cut(spec: str, text: str, sep: str) -> tuple[str, str | None]:
    """``"a#b"`` -> ``("a", "b")``; ``"a"`` -> ``("a", None)``; an empty part is an error."""
    if sep not in text:
        return text, None
    head, tail = text.rsplit(sep, 1)
    if not tail:
        raise InvalidArgument(f"Nothing follows {sep!r} in --corpus {spec!r}; give the "
                              f"{'column' if sep == '#' else 'split' if sep == '@' else 'config'} "
                              f"or drop the {sep!r}.")
    return head, tail


def _dataset_texts(c: Corpus, n_docs: int) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise InvalidArgument(f"--corpus {c.key} needs the datasets package: pip install "
                              "'bagofdims[data]'.") from None
    ds = _open(datasets, c)
    column = _column(c, ds)
    rows = (r[column] for r in ds)
    texts = (t.strip() for t in rows if isinstance(t, str))
    return list(itertools.islice((t for t in texts if t), n_docs))


def _open(datasets, c: Corpus):
    """The split as a ``Dataset`` (on disk) or an ``IterableDataset`` (streamed)."""
    try:
        if c.kind == "disk":
            ds = datasets.load_from_disk(c.name)
        elif c.kind == "files":
            ds = datasets.load_dataset(FORMATS[Path(c.name).suffix.lower()], data_files=c.name,
                                       split=c.split or "train", streaming=True)
        else:
            ds = datasets.load_dataset(c.name, c.config, split=c.split or "train", streaming=True)
    except (ValueError, KeyError) as err:  # unknown config or split
        raise InvalidArgument(f"--corpus {c.key}: {str(err).rstrip('.')}. Name a config or split it has "
                              "(:CONFIG, @SPLIT).") from err
    except Exception as err:  # not found, offline, unreadable: the reason is in the message
        raise MissingFile(f"--corpus {c.key} could not be opened ({type(err).__name__}: {err}); "
                          "check the name (and network), or pass a local dataset folder or data "
                          "file.") from err
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        splits = list(ds)
        split = c.split or ("train" if "train" in ds else splits[0] if len(splits) == 1 else None)
        if split not in ds:
            raise InvalidArgument(f"--corpus {c.key}: choose a split with @SPLIT; it has "
                                  f"{', '.join(splits)}.")
        ds = ds[split]
    elif c.split and c.kind == "disk":
        raise InvalidArgument(f"--corpus {c.key}: {c.name} holds one dataset without splits; "
                              "drop @SPLIT.")
    return ds


def _column(c: Corpus, ds) -> str:
    """``#COLUMN`` (checked), else the only string column."""
    features = ds.features
    if features is None:  # a stream whose schema is not declared: read it off the first row
        first = next(iter(ds), None)
        if first is None:
            raise InvalidArgument(f"--corpus {c.key} is empty; pass a corpus with some text.")
        columns = list(first)
        strings = [k for k, v in first.items() if isinstance(v, str)]
    else:
        columns = list(features)
        strings = [k for k, v in features.items()
                   if getattr(v, "dtype", None) in ("string", "large_string")]
    if c.column is not None:
        if c.column not in strings:
            what = "not a string column" if c.column in columns else "not a column"
            raise InvalidArgument(f"--corpus {c.key}: '{c.column}' is {what}; its string columns "
                                  f"are {', '.join(strings) or 'none'}.")
        return c.column
    if len(strings) == 1:
        return strings[0]
    if not strings:
        raise InvalidArgument(f"--corpus {c.key} has no string column (columns: "
                              f"{', '.join(columns)}); pass a text dataset.")
    raise InvalidArgument(f"--corpus {c.key} has several string columns ({', '.join(strings)}); "
                          f"choose one with #COLUMN, e.g. {c.key}#{strings[0]}.")
