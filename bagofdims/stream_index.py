"""The on-disk index of an activation store: format constants, the texts' hash, validation
(of the index, and of the texts and sizes a store is written with).

The format is described in :mod:`bagofdims.stream`. Everything a reader or a resume takes from
``index.json`` is checked here first, so a damaged or edited index is a :class:`StoreError` that
names the field, never a ``KeyError`` deep in a reader.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import torch

from bagofdims.errors import InvalidArgument, InvalidType, StoreError

FORMAT = "bagofdims.activations/2"
INDEX = "index.json"
KEYS = ("doc", "pos", "token_id")  # stored beside the sites, int64
DTYPES = {"float16": (torch.float16, np.float16), "float32": (torch.float32, np.float32)}
SHARD = re.compile(r"shard-\d{5,}\.safetensors")


def texts_sha256(texts) -> str:
    """sha256 over ``texts``, each as an 8-byte length then its UTF-8 bytes (no ambiguity)."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def check_texts(texts) -> list[str]:
    if isinstance(texts, (str, bytes, bytearray, dict)) or not (
            hasattr(texts, "__len__") and hasattr(texts, "__getitem__")):
        raise InvalidType(f"texts must be a list of str, not {type(texts).__name__}; wrap one text "
                          "as [text], and turn a generator into a list (it cannot be resumed).")
    texts = list(texts)
    if not texts:
        raise InvalidArgument("texts is empty; pass at least one text.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidType(f"texts[{i}] is a {type(text).__name__}, not str; pass a list of "
                              "str.")
        if not text:
            raise InvalidArgument(f"texts[{i}] is empty; drop empty texts before writing.")
    return texts


def check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, not {type(value).__name__}.")
    if value <= 0:
        raise InvalidArgument(f"{name} must be positive, got {value}.")


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise StoreError(f"{path} cannot be read ({err}); check its permissions.") from err


def is_count(x, low: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def parse_index(raw: bytes, root: Path) -> dict:
    """The index, after checking every field a reader or a resume relies on."""
    def bad(why: str) -> StoreError:
        return StoreError(f"{root / INDEX} {why}; rewrite the store with write_activations(..., "
                          "overwrite=True; CLI: --overwrite) or restore the file.")

    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"is not UTF-8 JSON ({err})") from err
    if not isinstance(index, dict):
        raise bad(f"holds a JSON {type(index).__name__}, not an object")
    if index.get("format") != FORMAT:
        raise bad(f"has format {index.get('format')!r}, not {FORMAT!r} (an older store has no "
                  "checksums)")
    for key, kind in (("settings", dict), ("widths", dict), ("shards", list), ("complete", bool)):
        if not isinstance(index.get(key), kind):
            raise bad(f"has no '{key}' of type {kind.__name__}")
    s = index["settings"]
    strings = ("model", "weights", "tokenizer", "padding_side", "truncation_side", "texts_sha256")
    for key in strings:
        if not isinstance(s.get(key), str):
            raise bad(f"has no string settings.{key}")
    for key in ("max_length", "batch_size", "shard_tokens", "n_docs"):
        if not is_count(s.get(key), 1):
            raise bad(f"has no positive int settings.{key}")
    if s.get("dtype") not in DTYPES:
        raise bad(f"has settings.dtype {s.get('dtype')!r}, not one of {list(DTYPES)}")
    if not (s.get("start_token") is None or is_count(s.get("start_token"))):
        raise bad("has a settings.start_token that is neither null nor a token id")
    sites = s.get("sites")
    if not (isinstance(sites, list) and sites and all(isinstance(x, str) for x in sites)
            and len(set(sites)) == len(sites)):
        raise bad("has no list of distinct site names in settings.sites")
    widths = index["widths"]
    if any(k not in sites or not is_count(v, 1) for k, v in widths.items()) or (
            index["shards"] and set(widths) != set(sites)):
        raise bad(f"has widths {widths} that do not match the sites {sites}")
    end = 0
    for i, shard in enumerate(index["shards"]):
        if not isinstance(shard, dict):
            raise bad(f"has shard {i} that is not an object")
        file = shard.get("file")
        if not (isinstance(file, str) and SHARD.fullmatch(file)):
            raise bad(f"names shard {i} {file!r}, not a plain shard file name inside the store "
                      "(shard-NNNNN.safetensors)")
        docs = shard.get("docs")
        if not (isinstance(docs, list) and len(docs) == 2 and all(is_count(d) for d in docs)
                and docs[0] == end < docs[1] <= s["n_docs"]):
            raise bad(f"gives shard {file} texts {docs!r}, not the next run after text {end}")
        end = docs[1]
        digest = shard.get("sha256")
        if not (is_count(shard.get("tokens")) and is_count(shard.get("bytes"), 8)
                and isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise bad(f"has no valid tokens / bytes / sha256 for shard {file}")
    if len({sh["file"] for sh in index["shards"]}) != len(index["shards"]):
        raise bad("lists a shard file twice")
    if index["complete"] != (end == s["n_docs"]):
        raise bad(f"says complete={index['complete']} but its shards cover {end} of "
                  f"{s['n_docs']} texts")
    return index


def check_shard_file(root: Path, shard: dict) -> Path:
    """The shard's path, once it is a regular file of the listed size inside the store."""
    path = root / shard["file"]
    if not path.is_file():
        raise StoreError(f"{root}: shard {shard['file']} is missing; rewrite the store with "
                         "write_activations(..., overwrite=True; CLI: --overwrite).")
    if path.resolve().parent != root.resolve():
        raise StoreError(f"{root}: shard {shard['file']} links outside the store; copy the file "
                         "in or rewrite the store.")
    size = path.stat().st_size
    if size != shard["bytes"]:
        raise StoreError(f"{root}: shard {shard['file']} has {size} bytes, the index says "
                         f"{shard['bytes']} (truncated or replaced); rewrite the store with "
                         "write_activations(..., overwrite=True; CLI: --overwrite).")
    return path
