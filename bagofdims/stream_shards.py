"""Which texts each shard of an activation store holds, and shards finished out of order.

The plan (:func:`plan_shards`): texts are read in batches of ``batch_size``; a shard closes at the
first batch end past ``shard_tokens`` tokens, or at the last text. The tokens are counted by the
tokenizer alone (each text truncated to ``max_length``, as the capture does), so the shards are
known before anything runs: any process can write any shard, and a resumed or multi-process run
cuts the texts exactly as one uninterrupted process does.

Several processes (:mod:`bagofdims.parallel`) each write the shards they are given, each followed
by a *part* file ``.part-NNNNN.json`` holding the entry the index will list for it (and the sites'
widths). Only the main process writes ``index.json``: :func:`settle` and :func:`fold` list finished
parts in order after the listed shards, and the part files go once the index lists them. A part
whose shard is missing or differs from it is dropped with its shard, so that shard is redone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bagofdims.errors import StoreError
from bagofdims.storage import sha256, write_json
from bagofdims.stream_index import SHARD, check_shard_file

BLOCK = 4096  # texts tokenized at a time while counting
PART = re.compile(r"\.part-\d{5,}\.json")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def part_path(out: Path, i: int) -> Path:
    return out / f".part-{i:05d}.json"


def plan_shards(tokenizer, texts: list[str], batch_size: int, max_length: int,
                shard_tokens: int) -> list[tuple[int, int, int]]:
    """``[(first text, end text, tokens), ...]``: the shards of a store, in order."""
    counts: list[int] = []
    for b in range(0, len(texts), BLOCK):
        enc = tokenizer(texts[b:b + BLOCK], truncation=True, max_length=max_length)
        counts.extend(sum(mask) for mask in enc["attention_mask"])
    shards, start, tokens = [], 0, 0
    for b in range(0, len(texts), batch_size):
        end = min(b + batch_size, len(texts))
        tokens += sum(counts[b:end])
        if tokens >= shard_tokens or end == len(texts):
            shards.append((start, end, tokens))
            start, tokens = end, 0
    return shards


def write_part(out: Path, i: int, entry: dict, widths: dict) -> None:
    """Record a finished shard for the main process to list (after the shard is in place)."""
    write_json(part_path(out, i), {"entry": entry, "widths": widths})


def _read_part(out: Path, i: int, planned: tuple[int, int, int], verify: bool) -> dict | None:
    """The part of shard ``i`` if it matches the plan and its shard file (sha256 if ``verify``)."""
    path = part_path(out, i)
    if not path.is_file():
        return None
    try:
        part = json.loads(path.read_text(encoding="utf-8"))
        entry = part["entry"]
        ok = (entry["file"] == shard_name(i) and entry["docs"] == list(planned[:2])
              and entry["tokens"] == planned[2] and isinstance(part["widths"], dict))
        check_shard_file(out, entry)
    except (OSError, ValueError, KeyError, TypeError, StoreError):
        return None
    if not ok or verify and sha256(out / entry["file"]) != entry["sha256"]:
        return None
    return part


def fold(out: Path, index: dict, plan: list, verify: bool = False) -> list[Path]:
    """List, after the shards ``index`` lists, every following shard that has a part; returns the
    part files now listed (remove them once the index is written)."""
    listed = []
    while len(index["shards"]) < len(plan):
        i = len(index["shards"])
        part = _read_part(out, i, plan[i], verify)
        if part is None:
            break
        index["shards"].append(part["entry"])
        for name, width in part["widths"].items():
            index["widths"].setdefault(name, width)
        listed.append(part_path(out, i))
    index["complete"] = bool(index["shards"]) and \
        index["shards"][-1]["docs"][1] == index["settings"]["n_docs"]
    return listed


def settle(out: Path, index: dict, plan: list) -> tuple[list[int], list[Path]]:
    """Before a (resumed) run: check the listed shards against the plan, list the parts that
    continue them, drop damaged parts and unlisted shards that have none. Returns the shards still
    to write and the part files now listed."""
    for i, shard in enumerate(index["shards"]):
        if i >= len(plan) or shard["file"] != shard_name(i) or shard["docs"] != list(plan[i][:2]):
            raise StoreError(f"{out}: listed shard {shard['file']} (texts {shard['docs']}) is not "
                             "where these settings put it; rewrite the store with "
                             "write_activations(..., overwrite=True; CLI: --overwrite).")
    before = len(index["shards"])  # parts of shards listed before now are stale
    listed = fold(out, index, plan, verify=True)
    done = set(range(len(index["shards"])))
    for i in range(len(index["shards"]), len(plan)):
        if _read_part(out, i, plan[i], verify=True) is not None:
            done.add(i)
    names = {shard_name(i) for i in done} | {part_path(out, i).name for i in done if i >= before}
    for p in out.iterdir():  # a shard renamed into place but never recorded is redone
        if (SHARD.fullmatch(p.name) or PART.fullmatch(p.name)) and p.name not in names:
            p.unlink()
    return [i for i in range(len(plan)) if i not in done], listed
