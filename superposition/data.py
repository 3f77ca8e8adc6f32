"""Binary bag-of-words windows: vocabulary, windowing, sparse (CSR) storage and batches.

Documents are shuffled once (seeded) and split by position: the last ``val_fraction`` of them is
validation. Windows of ``window`` consecutive lines (stride ``stride``) are cut inside each
document, so no window ever holds lines of two documents (nor of both splits). A document shorter
than the window is one window holding all of it (``short_docs="whole"``) or is left out
(``short_docs="skip"``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

from .corpus import FORCED_WORDS, Document, load_corpus, tokenize
from bagofdims.errors import InvalidArgument, MissingFile, ResumeError, StorageError
from bagofdims.storage import atomic_dir, sha256

# 2: meta.json carries "format" and the sha256 of every file ("files")
# 3: windows stop at document boundaries (format 2 windows ran across documents)
FORMAT = 3
SHORT_DOCS = ("whole", "skip")

log = logging.getLogger(__name__)


WINDOWING = {
    "whole": "windows of {w} consecutive lines, stride {s}, inside one document (never across two); "
             "a document shorter than {w} lines is one window holding all of it",
    "skip": "windows of {w} consecutive lines, stride {s}, inside one document (never across two); "
            "documents shorter than {w} lines are left out",
}


@dataclass
class DataConfig:
    """Settings of ``bows data`` (every field is also a CLI flag)."""
    out: str = "runs/bows/data"
    """Data directory to write (vocab.json, meta.json, train / val / frequency .safetensors)."""
    corpus: str = "default"
    """Text source: default (the packaged wiki and bbc), a comma list of wiki / bbc / shakespeare,
    or a Hugging Face datasets source SOURCE[@SPLIT][#COLUMN]: a hub name such as
    wikitext:wikitext-103-raw-v1 (online), a save_to_disk directory, or a path / glob of local
    .txt, .json or .jsonl files (split: train, column: text unless named)."""
    vocab: int = 10000
    """Vocabulary size in words: 39 forced words (days, months, planets, animals) first, then the
    most frequent words of the training documents."""
    window: int = 20
    """Lines (paragraphs) per window: a window is the set of vocabulary words in this many
    consecutive lines of one document; it never spans two documents."""
    stride: int = 1
    """Lines from the start of one window to the start of the next (1: a window at every line)."""
    short_docs: str = "whole"
    """Documents with fewer lines than --window: whole (the document is one window) or skip."""
    min_chars: int = 50
    """Lines shorter than this many characters count as empty (they keep their place, add no words)."""
    val_fraction: float = 0.1
    """Fraction of the documents (after the seeded shuffle) held out as validation, in [0, 1)."""
    seed: int = 0
    """Seed of the document shuffle that decides the train / validation split."""


def check_config(cfg: DataConfig) -> None:
    """Refuse settings that cannot make data, before any corpus is read."""
    if cfg.vocab < 1 or cfg.window < 1 or cfg.stride < 1 or cfg.min_chars < 0:
        raise InvalidArgument(f"vocab, window and stride must be >= 1 and min_chars >= 0 (got {cfg.vocab}, "
                              f"{cfg.window}, {cfg.stride}, {cfg.min_chars})")
    if not 0 <= cfg.val_fraction < 1:
        raise InvalidArgument(f"val_fraction must lie in [0, 1), not {cfg.val_fraction}")
    if cfg.short_docs not in SHORT_DOCS:
        raise InvalidArgument(f"short_docs must be one of {', '.join(SHORT_DOCS)}, not {cfg.short_docs!r}")


def build_vocab(lines: list[list[str]], size: int, forced: list[str] = FORCED_WORDS) -> list[str]:
    """Forced words first (in their given order), then the most frequent words (ties A-Z)."""
    counts = Counter(w for ln in lines for w in ln)
    vocab = list(dict.fromkeys(forced))[:size]
    taken = set(vocab)
    rest = sorted((w for w in counts if w not in taken), key=lambda w: (-counts[w], w))
    return vocab + rest[: size - len(vocab)]


def lines_matrix(lines: list[list[str]], index: dict[str, int]) -> sp.csr_matrix:
    """Binary [n_lines, V] CSR matrix of the vocabulary words in each line."""
    ids = [[index[w] for w in ln if w in index] for ln in lines]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(indptr[-1]))
    m = sp.csr_matrix((np.ones(len(flat), np.float32), flat, indptr), shape=(len(lines), len(index)))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def window_matrix(lines: sp.csr_matrix, window: int, stride: int = 1,
                  doc_lengths=None, short_docs: str = "whole") -> sp.csr_matrix:
    """Union of ``window`` consecutive rows, every ``stride`` rows, as one sparse product.

    ``doc_lengths`` (rows per document, summing to the row count; default: one document) keeps
    every window inside one document. A document shorter than the window gives one window holding
    all of it (``short_docs="whole"``) or none (``"skip"``).
    """
    if window < 1 or stride < 1:
        raise InvalidArgument(f"window and stride must be >= 1 (got {window}, {stride})")
    if short_docs not in SHORT_DOCS:
        raise InvalidArgument(f"short_docs must be one of {SHORT_DOCS}, not {short_docs!r}")
    n = lines.shape[0]
    lens = np.asarray([n] if doc_lengths is None else doc_lengths, dtype=np.int64)
    if lens.sum() != n or np.any(lens < 0):
        raise InvalidArgument(f"document lengths sum to {lens.sum()}, not the {n} lines")
    if short_docs == "skip":
        lens_w = np.where(lens >= window, lens, 0)
    else:
        lens_w = lens
    width = np.minimum(window, lens_w)                          # window width in each document
    count = np.where(lens_w > 0, (lens_w - width) // stride + 1, 0)  # windows per document
    doc_start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    k = int(count.sum())
    if k == 0:
        return sp.csr_matrix((0, lines.shape[1]), dtype=np.float32)
    doc = np.repeat(np.arange(len(lens)), count)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    starts = doc_start[doc] + (np.arange(k) - first[doc]) * stride
    widths = width[doc]
    rows = np.repeat(np.arange(k), widths)
    cols = np.repeat(starts - np.concatenate([[0], np.cumsum(widths)[:-1]]), widths) + np.arange(widths.sum())
    band = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(k, n))
    out = (band @ lines).tocsr()
    out.data[:] = 1
    out.sort_indices()
    return out


def sparsity_stats(x: sp.csr_matrix) -> dict:
    nnz = np.diff(x.indptr)
    return {"windows": int(x.shape[0]), "mean_active": float(nnz.mean()) if len(nnz) else 0.0,
            "max_active": int(nnz.max()) if len(nnz) else 0,
            "density": float(nnz.mean() / x.shape[1]) if len(nnz) else 0.0,
            "empty_windows": int((nnz == 0).sum())}


def make_windows(docs: list[Document], cfg: DataConfig) -> tuple[list[str], sp.csr_matrix, sp.csr_matrix]:
    """Vocabulary (from the training documents) and the train / validation window matrices."""
    order = np.random.default_rng(cfg.seed).permutation(len(docs))
    n_val = int(round(len(docs) * cfg.val_fraction))
    if len(docs) - n_val < 1:
        raise InvalidArgument(f"corpus has {len(docs)} documents: too few for val_fraction={cfg.val_fraction}")
    parts = [order[: len(docs) - n_val], order[len(docs) - n_val:]]
    tok = [[tokenize(ln, cfg.min_chars) for i in p for ln in docs[i]] for p in parts]
    vocab = build_vocab(tok[0], cfg.vocab)
    index = {w: i for i, w in enumerate(vocab)}
    mats = []
    for lines, p in zip(tok, parts):
        x = window_matrix(lines_matrix(lines, index), cfg.window, cfg.stride,
                          doc_lengths=[len(docs[i]) for i in p], short_docs=cfg.short_docs)
        keep = np.diff(x.indptr) > 0  # windows with no vocabulary word teach nothing
        mats.append(x[keep])
    return vocab, mats[0], mats[1]


def build_data(cfg: DataConfig) -> Path:
    """Read the corpus, cut windows and write ``cfg.out`` (vocab.json, meta.json, CSR files)."""
    t0 = time.time()
    check_config(cfg)
    docs = load_corpus(cfg.corpus)
    vocab, train, val = make_windows(docs, cfg)
    freq = np.asarray(train.sum(axis=0)).ravel() / max(train.shape[0], 1)
    lengths = np.array([len(d) for d in docs])
    meta = {"format": FORMAT, "config": asdict(cfg), "documents": len(docs), "vocab_size": len(vocab),
            "windowing": WINDOWING[cfg.short_docs].format(w=cfg.window, s=cfg.stride),
            "documents_shorter_than_window": int((lengths < cfg.window).sum()),
            "train": sparsity_stats(train), "val": sparsity_stats(val), "seconds": time.time() - t0}
    log.info("data: %d docs, V=%d, train %s, val %s", len(docs), len(vocab), meta["train"], meta["val"])

    def write(d: Path) -> None:
        for name, x in (("train", train), ("val", val)):
            save_file({"indptr": x.indptr.astype(np.int64), "indices": x.indices.astype(np.int32)},
                      str(d / f"{name}.safetensors"))
        save_file({"frequency": freq.astype(np.float32)}, str(d / "frequency.safetensors"))
        (d / "vocab.json").write_text(json.dumps(vocab))
        meta["files"] = {f.name: sha256(f) for f in sorted(d.iterdir())}
        (d / "meta.json").write_text(json.dumps(meta, indent=2))

    out = Path(cfg.out)
    # readers see the old directory or the new one; a killed build's leftovers are cleaned first
    atomic_dir(out, write, overwrite=True)
    return out


def ensure_data(cfg: DataConfig) -> "BowsData":
    """The data directory ``cfg.out``: built if absent, else reused when it was built with the
    same settings (``out`` aside); other settings raise :class:`ResumeError`."""
    out = Path(cfg.out)
    if not (out / "meta.json").exists():
        build_data(cfg)
        return BowsData(out)
    check_config(cfg)
    old = _format_of(out)
    if isinstance(old, int) and old != FORMAT:
        raise ResumeError(f"{out} holds bows data of format {old} ({FORMAT_CHANGES.get(old, 'another version')}); "
                          f"this version needs format {FORMAT}. Delete {out} (or use another directory) to rebuild it.")
    data = BowsData(out)
    wanted, saved = asdict(cfg), data.meta.get("config", {})
    diffs = [f"{k}: {wanted[k]!r} here, {saved.get(k)!r} in the saved data"
             for k in wanted if k != "out" and saved.get(k) != wanted[k]]
    if diffs:
        raise ResumeError(f"{out} holds data built with other settings ({'; '.join(diffs)}). Use the "
                          f"same settings, or another directory (or delete {out}) to rebuild it.")
    return data


FORMAT_CHANGES = {1: "no checksums", 2: "its windows ran across document boundaries"}


def _format_of(out: Path):
    try:
        return json.loads((out / "meta.json").read_text()).get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


@dataclass
class Batch:
    """A batch of windows as active word ids: ``ids[offsets[k]:offsets[k+1]]`` is window k."""
    ids: torch.Tensor      # int64 [nnz]
    offsets: torch.Tensor  # int64 [n]
    rows: torch.Tensor     # int64 [nnz], window index of each id
    n: int

    def to(self, device) -> "Batch":
        return Batch(self.ids.to(device), self.offsets.to(device), self.rows.to(device), self.n)

    def dense(self, vocab_size: int) -> torch.Tensor:
        x = torch.zeros(self.n, vocab_size, device=self.ids.device)
        x[self.rows, self.ids] = 1.0
        return x


class BowsData:
    """A data directory written by :func:`build_data`, loaded for training and analysis."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "meta.json").exists():
            raise MissingFile(f"{self.path}: no meta.json; build it with `bows data --out {self.path}`")
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise self._bad(f"meta.json is not readable JSON ({err})") from err
        if isinstance(self.meta, dict) and self.meta.get("format") in FORMAT_CHANGES:
            old = self.meta["format"]
            raise self._bad(f"it is bows data of format {old} ({FORMAT_CHANGES[old]}), this version reads "
                            f"format {FORMAT}")
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT \
                or not isinstance(self.meta.get("files"), dict):
            raise self._bad(f"meta.json is not bows data of format {FORMAT} (older version or edited)")
        vocab = json.loads(self._checked("vocab.json").read_text())
        if not (isinstance(vocab, list) and all(isinstance(w, str) for w in vocab)) \
                or len(vocab) != self.meta.get("vocab_size"):
            raise self._bad("vocab.json does not hold meta.json's vocab_size words")
        self.vocab: list[str] = vocab
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.frequency = load_file(str(self._checked("frequency.safetensors"))).get("frequency")
        if self.frequency is None or self.frequency.shape != (len(vocab),):
            raise self._bad("frequency.safetensors does not hold one frequency per word")
        self._split: dict[str, sp.csr_matrix] = {}

    def _bad(self, problem: str) -> StorageError:
        return StorageError(f"{self.path}: {problem}; rebuild it with `bows data --out {self.path}`")

    def _checked(self, name: str) -> Path:
        """Path of a file of the directory after checking it against meta.json's sha256."""
        f = self.path / name
        want = self.meta["files"].get(name)
        if want is None or not f.is_file():
            raise self._bad(f"{name} is missing")
        if sha256(f) != want:
            raise self._bad(f"{name} does not match its checksum in meta.json (truncated or edited)")
        return f

    @property
    def fingerprint(self) -> str:
        """sha256 over the checksums of the files: equal for equal data wherever it lies."""
        return hashlib.sha256(json.dumps(self.meta["files"], sort_keys=True).encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, name: str) -> sp.csr_matrix:
        """``train`` or ``val`` windows as a binary CSR matrix [windows, V]."""
        if name not in self._split:
            t = load_file(str(self._checked(f"{name}.safetensors")))
            indptr, indices = t.get("indptr"), t.get("indices")
            n = (self.meta.get(name) or {}).get("windows")
            if not isinstance(n, int) or indptr is None or indices is None or indptr.shape != (n + 1,) \
                    or indptr[0] != 0 \
                    or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0) \
                    or (len(indices) and (indices.min() < 0 or indices.max() >= self.vocab_size)):
                raise self._bad(f"{name}.safetensors is not a CSR matrix of {n} windows over the vocabulary")
            self._split[name] = sp.csr_matrix(
                (np.ones(len(t["indices"]), np.float32), t["indices"], t["indptr"]),
                shape=(n, self.vocab_size))
        return self._split[name]

    def batches(self, name: str, batch_size: int, shuffle: bool = True, seed: int = 0,
                skip: int = 0):
        """Yield :class:`Batch` objects; the order depends only on ``seed`` (resumable via ``skip``)."""
        x = self.split(name)
        order = np.random.default_rng(seed).permutation(x.shape[0]) if shuffle else np.arange(x.shape[0])
        for k in range(skip, (len(order) + batch_size - 1) // batch_size):
            yield rows_to_batch(x, order[k * batch_size:(k + 1) * batch_size])

    def num_batches(self, name: str, batch_size: int) -> int:
        return (self.split(name).shape[0] + batch_size - 1) // batch_size


def rows_to_batch(x: sp.csr_matrix, rows: np.ndarray) -> Batch:
    """Gather CSR rows into a :class:`Batch` without a Python loop over rows."""
    start, end = x.indptr[rows], x.indptr[rows + 1]
    lengths = end - start
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos = np.repeat(start - offsets, lengths) + np.arange(lengths.sum())
    ids = torch.from_numpy(x.indices[pos].astype(np.int64))
    return Batch(ids, torch.from_numpy(offsets.astype(np.int64)),
                 torch.from_numpy(np.repeat(np.arange(len(rows)), lengths)), len(rows))
