"""The catalog on disk: typed metadata, feature records, checksums, validation on load.

A catalog directory holds ``catalog.json`` (meta, one record per feature, the sha256 of
``features.safetensors``, and the sha256 of its own canonical content) and
``features.safetensors`` (``offsets`` int64 [n + 1], ``dims`` int64, ``signs`` int8,
``dim_auc`` float32: all features concatenated). Loading checks both checksums and every value
(dims inside the site's width and unique, signs ±1, finite thresholds, known sites), so a
flipped dim, a swapped record or a hand-edited threshold is refused rather than read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from bagofdims.errors import CatalogError, SafetensorsError
from bagofdims.features.feature import Feature
from bagofdims.storage import atomic_dir, open_mmap, recover, sha256

FORMAT_VERSION = 2
TENSORS = "features.safetensors"
RECORD_FIELDS = ("name", "site", "anchors", "anchor_words", "held_out", "held_out_words", "method",
                 "params", "threshold", "metrics", "width")


@dataclass
class CatalogMeta:
    """What a catalog was built from and how."""

    model: str
    weights: str  # weight fingerprint of the model (the cache's)
    tokenizer: str  # tokenizer fingerprint
    sites: list[str]
    config: dict  # the DiscoveryConfig used, as a dict
    categories: str  # shipped set name, JSON path, or "custom"
    n_anchors: int | float  # a count, or for example caches a fraction of each category's groups
    forms: str
    skipped: dict[str, str] = field(default_factory=dict)  # category -> why it was skipped
    bos_id: int | None = None  # start token the cache read before each token
    cache: str | None = None  # absolute path of the cache at build time
    cache_relative: str | None = None  # the same, relative to the catalog directory
    evidence: dict = field(default_factory=dict)  # EvidenceConfig used ({}: none computed)
    examples: dict = field(default_factory=dict)  # example catalogs: pool, processor_kwargs, split
    # built from a subset cache: its record (without the ids) and the random-token population
    subset: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


_META_TYPES = {"model": str, "weights": str, "tokenizer": str, "sites": list, "config": dict,
               "categories": str, "n_anchors": (int, float), "forms": str, "skipped": dict,
               "bos_id": (int, type(None)), "cache": (str, type(None)),
               "cache_relative": (str, type(None)), "evidence": dict, "examples": dict,
               "subset": dict, "format_version": int}
_OPTIONAL = {"examples": {}, "subset": {}}  # fields added within format 2: absent in older catalogs


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def _record(f: Feature) -> dict:
    rec = {k: getattr(f, k) for k in RECORD_FIELDS}
    rec["id"] = f.id
    return rec


def write(path, meta: CatalogMeta, features: list[Feature], overwrite: bool = False) -> Path:
    """Write a catalog directory atomically (see the module docstring)."""
    sizes = [len(f) for f in features]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def cat(xs, dt):
        return np.concatenate([np.asarray(x, dtype=dt) for x in xs]) if xs else np.zeros(0, dt)

    tensors = {
        "offsets": offsets,
        "dims": cat([f.dims.numpy() for f in features], np.int64),
        "signs": cat([f.signs.numpy() for f in features], np.int8),
        "dim_auc": cat([f.dim_auc.numpy() if f.dim_auc is not None else np.full(len(f), np.nan)
                        for f in features], np.float32),
    }
    target = Path(path)

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSORS))
        meta.cache_relative = (os.path.relpath(meta.cache, target.resolve())
                               if meta.cache else None)
        body = {"meta": dataclasses.asdict(meta), "features": [_record(f) for f in features],
                "files": {TENSORS: sha256(tmp / TENSORS)}}
        (tmp / "catalog.json").write_text(json.dumps({**body, "sha256": _digest(body)}))

    return atomic_dir(target, fill, overwrite)


def read(path) -> tuple[CatalogMeta, list[Feature]]:
    """Load and validate a catalog directory; raise :class:`CatalogError` naming the problem."""
    path = Path(path)
    recover(path)  # completes a replacement a killed save left half-done
    where = path / "catalog.json"
    if not where.exists():
        raise CatalogError(f"{path} is not a catalog (no catalog.json). Build one with "
                           "`bagofdims catalog --cache DIR --out DIR` or Catalog.build(...).save(DIR).")
    try:
        data = json.loads(where.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CatalogError(f"{where} is corrupt ({err}); rebuild the catalog.") from err
    if not isinstance(data, dict) or not {"meta", "features", "files", "sha256"} <= set(data):
        raise CatalogError(f"{where} is not a catalog of format {FORMAT_VERSION} (missing meta, "
                           "features, files or checksum); rebuild the catalog.")
    body = {k: v for k, v in data.items() if k != "sha256"}
    if data["sha256"] != _digest(body):
        raise CatalogError(f"{where} was edited or damaged after it was written (its checksum "
                           "does not match); rebuild the catalog.")
    meta = _meta(data["meta"], where)
    tensors = path / TENSORS
    if not tensors.exists() or sha256(tensors) != data["files"].get(TENSORS):
        raise CatalogError(f"{tensors} is missing, corrupt or from another catalog (checksum "
                           "differs from catalog.json); rebuild the catalog.")
    try:
        arrays = open_mmap(tensors)
    except SafetensorsError as err:
        raise CatalogError(f"{tensors} is corrupt ({err}); rebuild the catalog.") from err
    return meta, _features(arrays, data["features"], meta, path)


def _meta(obj, where) -> CatalogMeta:
    if isinstance(obj, dict):
        obj = {**{k: dict(v) for k, v in _OPTIONAL.items()}, **obj}
    if not isinstance(obj, dict) or set(obj) != set(_META_TYPES):
        raise CatalogError(f"{where}: the meta fields are not those of format {FORMAT_VERSION}; "
                           "rebuild the catalog.")
    for key, kind in _META_TYPES.items():
        if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
            raise CatalogError(f"{where}: meta.{key} is {obj[key]!r}; rebuild the catalog.")
    if obj["format_version"] != FORMAT_VERSION:
        raise CatalogError(f"{where}: catalog format {obj['format_version']} is not "
                           f"{FORMAT_VERSION}; rebuild it.")
    return CatalogMeta(**obj)


def _features(arrays: dict, records, meta: CatalogMeta, path: Path) -> list[Feature]:
    need = {"offsets": np.int64, "dims": np.int64, "signs": np.int8, "dim_auc": np.float32}
    if set(arrays) != set(need) or any(arrays[k].dtype != dt for k, dt in need.items()):
        raise CatalogError(f"{path}: features.safetensors does not hold offsets/dims/signs/dim_auc "
                           "of the expected types; rebuild the catalog.")
    off = np.asarray(arrays["offsets"])
    if not isinstance(records, list) or len(off) != len(records) + 1 or off[0] != 0 or \
            np.any(np.diff(off) < 0) or off[-1] != len(arrays["dims"]) or \
            len(arrays["signs"]) != len(arrays["dims"]) or len(arrays["dim_auc"]) != len(arrays["dims"]):
        raise CatalogError(f"{path}: features.safetensors does not match catalog.json; rebuild.")
    feats = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or set(rec) != set(RECORD_FIELDS) | {"id"}:
            raise CatalogError(f"{path}: feature record {i} has unexpected fields; rebuild.")
        thr = rec["threshold"]
        if thr is not None and (not isinstance(thr, (int, float)) or isinstance(thr, bool)
                                or not math.isfinite(thr)):
            raise CatalogError(f"{path}: feature {i} ('{rec['name']}') has threshold {thr!r}, "
                               "not a finite number; rebuild the catalog.")
        if rec["site"] not in meta.sites or not isinstance(rec["width"], int) or rec["width"] < 1:
            raise CatalogError(f"{path}: feature {i} ('{rec['name']}') is at site {rec['site']!r} "
                               f"of width {rec['width']!r}, not one of {meta.sites}; rebuild.")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   for v in rec["metrics"].values()):
            raise CatalogError(f"{path}: feature {i} ('{rec['name']}') has non-numeric metrics.")
        sl = slice(int(off[i]), int(off[i + 1]))
        args = {k: v for k, v in rec.items() if k != "id"}
        try:
            feats.append(Feature(dims=np.asarray(arrays["dims"][sl]), signs=np.asarray(arrays["signs"][sl]),
                                 dim_auc=np.asarray(arrays["dim_auc"][sl]), **args))
        except (ValueError, TypeError) as err:
            raise CatalogError(f"{path}: feature {i} is invalid ({err}); rebuild the catalog.") from err
    return feats
