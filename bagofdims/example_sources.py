"""Examples for :meth:`SignCache.build_inputs` read from files, tables and datasets.

>>> ex = read_examples("data/shapes", processor)     # data/shapes/<label>/<file>
>>> cache = SignCache.build_inputs(model, processor, ex.items, labels=ex.labels,
...                                processor_kwargs=ex.processor_kwargs)

Sources:

- a folder of files, one example per file, labelled by the sub-folder it sits in
  (``SRC/<label>/<file>``; files directly in ``SRC`` are unlabelled): images ``.png/.jpg/.jpeg/
  .bmp/.gif/.webp`` (read with Pillow, as ``uint8`` RGB arrays), ``.npy`` arrays, audio ``.wav``
  (read with ``scipy.io.wavfile``, mixed to mono, resampled to the processor's sampling rate with
  ``scipy.signal.resample_poly``) and texts ``.txt`` (the whole file is one example);
- a table ``.jsonl``, ``.csv`` or ``.parquet``: one example per row, from ``column`` (default:
  the first of ``text, image, audio, sentence, file, path`` it has); a string naming a file with
  one of the suffixes above (relative to the table's folder) is read as that file;
- a ``datasets`` folder written by ``save_to_disk``, or ``hf:NAME[:CONFIG][@SPLIT]`` streamed from
  the Hugging Face hub (the first ``limit`` rows, default 1000).

``labels`` / ``groups``: a file with one value per line (in example order), a column name of a
table or dataset, or ``"none"``. By default a table's ``label`` column, if any, gives the labels.
Every problem (an unreadable file, a missing column, a mix of kinds) is an
:class:`~bagofdims.errors.InvalidArgument` naming the input and the fix.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from itertools import islice
from math import gcd
from pathlib import Path

import numpy as np

from bagofdims.errors import InvalidArgument, MissingFile

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
KINDS = {**{s: "image" for s in IMAGE_SUFFIXES}, ".npy": "array", ".wav": "audio", ".txt": "text"}
TABLE_SUFFIXES = (".jsonl", ".csv", ".parquet")
INPUT_COLUMNS = ("text", "image", "audio", "sentence", "file", "path")
HF_PREFIX = "hf:"
HF_LIMIT = 1000  # rows taken from a streamed hub dataset unless told otherwise


@dataclass
class Examples:
    """Processor inputs with their labels, groups and where each came from."""

    items: list  # str (texts) or np.ndarray (images, arrays, clips)
    labels: list | None  # per example: str or None
    groups: list | None  # per example: str
    sources: list[str]  # per example: its file, or "table#row"
    kind: str  # "text", "image", "array" or "audio"
    origin: str  # the source as given
    processor_kwargs: dict = field(default_factory=dict)  # e.g. {"sampling_rate": 16000}

    def __len__(self) -> int:
        return len(self.items)


def sampling_rate(processor) -> int | None:
    """The sampling rate the processor (or its feature extractor) expects; None if it has none."""
    for part in (processor, getattr(processor, "feature_extractor", None)):
        rate = getattr(part, "sampling_rate", None)
        if isinstance(rate, int) and rate > 0:
            return rate
    return None


def read_examples(src: str, processor=None, labels: str | None = None, groups: str | None = None,
                  column: str | None = None, limit: int | None = None) -> Examples:
    """Read the examples of ``src`` (see the module docstring) for ``processor``."""
    if limit is not None and limit < 1:
        raise InvalidArgument(f"limit must be at least 1, got {limit}.")
    rate = sampling_rate(processor) if processor is not None else None
    src = str(src)
    if src.startswith(HF_PREFIX):
        rows, features = _hub_rows(src[len(HF_PREFIX):], limit or HF_LIMIT)
        ex = _from_rows(rows, features, src, None, column, labels, groups, rate)
    else:
        path = Path(src)
        if not path.exists():
            raise MissingFile(f"--inputs {src}: no such file or folder; give a folder of files, a "
                              f".jsonl/.csv/.parquet table, a datasets folder or hf:NAME.")
        if path.is_dir() and _is_saved_dataset(path):
            ds = _load_from_disk(path)
            ex = _from_rows(_take(iter(ds), limit), ds.features, src, None, column, labels,
                            groups, rate)
        elif path.is_dir():
            ex = _from_folder(path, labels, groups, column, rate, limit)
        elif path.suffix.lower() in TABLE_SUFFIXES:
            ex = _from_rows(_take(iter(_table_rows(path)), limit), None, src, path.parent, column,
                            labels, groups, rate)
        else:
            raise InvalidArgument(f"--inputs {src}: not a folder nor a table ({', '.join(TABLE_SUFFIXES)}); "
                                  "give a folder of files, a table, a datasets folder or hf:NAME.")
    if not ex.items:
        raise InvalidArgument(f"--inputs {src} holds no examples; add files or rows.")
    if ex.kind == "audio":
        if rate is None:
            raise InvalidArgument(f"--inputs {src} holds audio but the model's processor has no "
                                  "sampling rate; use an audio model's processor.")
        ex.processor_kwargs = {"sampling_rate": rate}
    log.info("%d %s examples from %s", len(ex), ex.kind, src)
    return ex


# -- folders -----------------------------------------------------------------------------------
def _from_folder(root: Path, labels, groups, column, rate, limit) -> Examples:
    if column is not None:
        raise InvalidArgument(f"--column {column} is for tables and datasets; a folder's files are "
                              "the examples themselves. Drop --column.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and
                   not any(part.startswith(".") for part in p.relative_to(root).parts))
    files = files[:limit] if limit else files
    if not files:
        raise InvalidArgument(f"--inputs {root} holds no files; put examples in {root}/<label>/.")
    kinds = set()
    for f in files:
        kind = KINDS.get(f.suffix.lower())
        if kind is None:
            raise InvalidArgument(f"{f}: unsupported file type {f.suffix or '(none)'}; use "
                                  f"{', '.join(KINDS)} files, or remove it.")
        kinds.add(kind)
    if len(kinds) > 1:
        raise InvalidArgument(f"--inputs {root} mixes {' and '.join(sorted(kinds))} files; keep one "
                              "kind of example per folder.")
    kind = kinds.pop()
    items = [read_file(f, rate) for f in files]
    rel = [f.relative_to(root) for f in files]
    folder_labels = [r.parts[0] if len(r.parts) > 1 else None for r in rel]
    sources = [str(f) for f in files]
    lab = _per_example(labels, len(files), "labels", None, allow_none=True)
    lab = folder_labels if labels is None else lab
    if lab is not None and all(v is None for v in lab):
        lab = None
    return Examples(items, lab, _per_example(groups, len(files), "groups", None), sources, kind,
                    str(root))


def read_file(path: Path, rate: int | None = None):
    """One example from a file: text, ``uint8`` RGB image array, ``.npy`` array or mono clip."""
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    try:
        if kind == "text":
            text = path.read_text(encoding="utf-8").strip()
            if not text:
                raise InvalidArgument(f"{path} is empty; put the example's text in it or remove it.")
            return text
        if kind == "array":
            return np.load(path, allow_pickle=False)
        if kind == "image":
            return _read_image(path)
        if kind == "audio":
            from scipy.io import wavfile

            sr, data = wavfile.read(path)
            return to_mono_float(data, sr, rate, str(path))
    except InvalidArgument:
        raise
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path} is not UTF-8 text; re-encode it or remove it.") from None
    except Exception as err:  # each reader has its own errors for a damaged file
        raise InvalidArgument(f"{path} cannot be read as {kind} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'damaged'}); "
                              "replace or remove it.") from None
    raise InvalidArgument(f"{path}: unsupported file type {path.suffix or '(none)'}; use "
                          f"{', '.join(KINDS)} files.")


def _read_image(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise InvalidArgument(f"{path}: reading images needs Pillow (pip install pillow); or save "
                              "them as .npy arrays.") from None
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def to_mono_float(data, sr: int, rate: int | None, where: str) -> np.ndarray:
    """float32 mono samples in [-1, 1] at ``rate`` (unchanged rate if None)."""
    data = np.asarray(data)
    if data.size == 0:
        raise InvalidArgument(f"{where} holds no samples; replace or remove it.")
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2
        data = (data.astype(np.float64) - mid) / (int(info.max) - mid + 1)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)  # channels last in wav files
    if data.ndim != 1:
        raise InvalidArgument(f"{where} holds samples of shape {data.shape}; give mono or "
                              "multi-channel audio.")
    if rate is not None and int(sr) != rate:
        from scipy.signal import resample_poly

        g = gcd(int(sr), rate)
        data = resample_poly(data, rate // g, int(sr) // g).astype(np.float32)
    return data


# -- tables and datasets -----------------------------------------------------------------------
def _table_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise InvalidArgument(f"{path}:{i} is not a JSON object; write one "
                                              "object per line.")
                    rows.append(row)
            return rows
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                return list(csv.DictReader(fh))
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except InvalidArgument:
        raise
    except Exception as err:
        raise InvalidArgument(f"{path} cannot be read as {suffix[1:]} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'damaged'}); fix or "
                              "replace it.") from None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def _load_from_disk(path: Path):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        raise InvalidArgument(f"{path} holds the splits {list(ds)}; give one of them, e.g. "
                              f"--inputs {path / next(iter(ds))}.")
    return ds


def _hub_rows(spec: str, limit: int):
    """Rows of ``NAME[:CONFIG][@SPLIT]`` streamed from the hub, and the dataset's features."""
    import datasets

    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    if not name:
        raise InvalidArgument("--inputs hf: needs a dataset name, e.g. hf:NAME[:CONFIG][@SPLIT].")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as err:  # offline, unknown name or split: one line from the hub's error
        raise InvalidArgument(f"--inputs hf:{spec}: cannot stream it ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); check the name, "
                              "config, split and the network.") from None
    return _take(iter(ds), limit), getattr(ds, "features", None)


def _take(rows, limit: int | None) -> list:
    return list(islice(rows, limit))


def _from_rows(rows: list[dict], features, origin: str, base: Path | None, column, labels,
               groups, rate) -> Examples:
    names = list(rows[0]) if rows else []
    if column is None:
        column = next((c for c in INPUT_COLUMNS if c in names), None)
        if column is None:
            raise InvalidArgument(f"{origin}: name the input column with --column; it has "
                                  f"{', '.join(names) or 'no columns'}.")
    _check_column(column, names, origin, "--column")
    items, kinds, sources = [], set(), []
    for i, row in enumerate(rows):
        where = f"{origin}#{i}"
        value, kind, source = _value(row.get(column), base, rate, where)
        items.append(value)
        kinds.add(kind)
        sources.append(source or where)
    if len(kinds) > 1:
        raise InvalidArgument(f"{origin}: column {column} mixes {' and '.join(sorted(kinds))}; keep "
                              "one kind of example per column.")
    if labels is None and "label" in names and column != "label":
        labels = "label"
    lab = _per_example(labels, len(rows), "labels", (rows, features, origin), allow_none=True)
    grp = _per_example(groups, len(rows), "groups", (rows, features, origin))
    return Examples(items, lab, grp, sources, kinds.pop() if kinds else "text", origin)


def _check_column(column: str, names: list, origin: str, flag: str) -> None:
    if column not in names:
        raise InvalidArgument(f"{flag} {column}: {origin} has no such column; it has "
                              f"{', '.join(map(str, names)) or 'no columns'}.")


def _value(x, base: Path | None, rate: int | None, where: str):
    """``(processor input, kind, source file or None)`` of one table or dataset cell."""
    if isinstance(x, str):
        path = (base / x) if base is not None else Path(x)
        if Path(x).suffix.lower() in KINDS and path.is_file():
            return read_file(path, rate), KINDS[path.suffix.lower()], str(path)
        if not x.strip():
            raise InvalidArgument(f"{where} is empty; give every row an input or drop it.")
        return x, "text", None
    if type(x).__module__.startswith("PIL."):
        return np.asarray(x.convert("RGB")), "image", None
    if isinstance(x, dict) and "array" in x:  # a datasets Audio record
        return to_mono_float(x["array"], x.get("sampling_rate") or rate, rate, where), "audio", None
    if isinstance(x, dict) and x.get("bytes") is not None:  # an undecoded image cell
        import io

        try:
            from PIL import Image

            with Image.open(io.BytesIO(x["bytes"])) as img:
                return np.asarray(img.convert("RGB")), "image", None
        except Exception as err:
            raise InvalidArgument(f"{where}: its image bytes cannot be read ({err}); fix the "
                                  "row or drop it.") from None
    if hasattr(x, "get_all_samples"):  # a torchcodec AudioDecoder (datasets >= 4)
        s = x.get_all_samples()
        return to_mono_float(s.data.numpy().T, s.sample_rate, rate, where), "audio", None
    if isinstance(x, (list, np.ndarray)):
        try:
            return np.asarray(x, dtype=np.float32), "array", None
        except (TypeError, ValueError):
            pass
    raise InvalidArgument(f"{where} holds {type(x).__name__}; a column must hold texts, file "
                          "names, images, audio records or numeric arrays.")


def _per_example(spec: str | None, n: int, flag: str, table, allow_none: bool = False) -> list | None:
    """Labels or groups from a file (one per line), a column of ``table``, or None."""
    if spec is None or spec == "none":
        return None
    path = Path(spec)
    if path.is_file():
        values = [v.strip() for v in path.read_text(encoding="utf-8").splitlines()]
        while values and not values[-1]:
            values.pop()
        if len(values) != n:
            raise InvalidArgument(f"--{flag} {spec} has {len(values)} lines for {n} examples; "
                                  "give one per example, in order.")
        return [v if v or not allow_none else None for v in values]
    if table is None:
        raise InvalidArgument(f"--{flag} {spec}: no such file; for a folder give a file with one "
                              "value per line (labels default to the sub-folder names).")
    rows, features, origin = table
    _check_column(spec, list(rows[0]) if rows else [], origin, f"--{flag}")
    feature = features[spec] if features is not None and spec in features else None
    out = []
    for i, row in enumerate(rows):
        v = row.get(spec)
        if v is not None and feature is not None and hasattr(feature, "int2str"):
            v = feature.int2str(v)
        if v is None or v == "":
            if not allow_none:
                raise InvalidArgument(f"--{flag} {spec}: row {i} of {origin} has none; give every "
                                      "row one.")
            out.append(None)
        elif isinstance(v, (str, int, np.integer)) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise InvalidArgument(f"--{flag} {spec}: row {i} of {origin} holds {v!r}; use strings "
                                  "or integers.")
    return out


# -- sources beside a cache --------------------------------------------------------------------
SOURCES_FILE = "sources.json"


def write_sources(cache_dir, ex: Examples) -> Path:
    """Record where each cached example came from (``sources.json`` beside ``meta.json``)."""
    path = Path(cache_dir) / SOURCES_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"origin": ex.origin, "kind": ex.kind, "sources": ex.sources}))
    tmp.replace(path)
    return path


def read_sources(cache_dir) -> dict | None:
    """``{"origin", "kind", "sources"}`` recorded for an example cache, or None."""
    if cache_dir is None:
        return None
    path = Path(cache_dir) / SOURCES_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
