"""Stream hidden states of a text dataset to sharded safetensors on disk, with resume.

>>> write_activations(model, tok, texts, ["resid.10", "k.3"], "runs/acts")
>>> store = ActivationStore("runs/acts"); store.load("resid.10")   # [n_tokens, d] float16

Each shard holds, for the non-padding tokens of a run of documents: one ``[n_tokens, width]``
tensor per site, plus ``doc`` (document index), ``pos`` (position in the document) and
``token_id``. ``index.json`` lists finished shards; a rerun after an interruption checks the
settings and continues after the last finished shard. Shards are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from bagofdims.capture import Capture, no_cache_kwargs
from bagofdims.models import model_name, weight_fingerprint
from bagofdims.storage import open_mmap, write_json
from bagofdims.errors import InvalidArgument, MissingFile, NotFound

INDEX = "index.json"


def write_activations(
    model,
    tokenizer,
    texts,
    sites,
    out,
    batch_size: int = 8,
    max_length: int = 256,
    shard_tokens: int = 32768,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
) -> Path:
    """Capture ``sites`` over ``texts`` (a list or any sized sequence of str) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_docs = len(texts)
    settings = {
        "model": model_name(model),
        "weights": weight_fingerprint(model),
        "sites": list(sites) if not isinstance(sites, str) else [sites],
        "dtype": str(dtype).replace("torch.", ""),
        "max_length": max_length,
        "batch_size": batch_size,
        "shard_tokens": shard_tokens,
        "n_docs": n_docs,
    }
    index_path = out / INDEX
    index = {"settings": settings, "widths": {}, "shards": []}
    if index_path.exists():
        index = json.loads(index_path.read_text())
        if index["settings"] != settings:
            raise InvalidArgument(
                f"{out} holds activations written with other settings; use another directory "
                "or delete it."
            )
    next_doc = index["shards"][-1]["docs"][1] if index["shards"] else 0
    device = next(model.parameters()).device
    # No KV cache: nothing is generated here.
    extra = no_cache_kwargs(model)
    buf: dict[str, list] = {}
    shard_start, buffered = next_doc, 0
    bar = tqdm(total=n_docs, initial=next_doc, desc="activations", unit="doc", disable=not progress)
    with torch.inference_mode(), Capture(model, settings["sites"], stop=True, dtype=dtype) as cap:
        names = [s.name for s in cap.sites]
        for start in range(next_doc, n_docs, batch_size):
            docs = [texts[i] for i in range(start, min(start + batch_size, n_docs))]
            enc = tokenizer(docs, return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length).to(device)
            cap.run(**enc, **extra)
            mask = enc["attention_mask"].bool()
            pos = mask.long().cumsum(1) - 1
            doc_ids = torch.arange(start, start + len(docs), device=device)[:, None].expand_as(mask)
            for name in names:
                buf.setdefault(name, []).append(cap[name][mask].cpu().numpy())
                index["widths"][name] = cap[name].shape[-1]
            buf.setdefault("doc", []).append(doc_ids[mask].cpu().numpy())
            buf.setdefault("pos", []).append(pos[mask].cpu().numpy())
            buf.setdefault("token_id", []).append(enc["input_ids"][mask].cpu().numpy())
            buffered += int(mask.sum())
            end = start + len(docs)
            bar.update(len(docs))
            if buffered >= shard_tokens or end == n_docs:
                _flush(out, index, buf, (shard_start, end), buffered)
                buf, shard_start, buffered = {}, end, 0
    bar.close()
    return out


def _flush(out: Path, index: dict, buf: dict, docs: tuple[int, int], n_tokens: int) -> None:
    name = f"shard-{len(index['shards']):05d}.safetensors"
    data = {k: np.ascontiguousarray(np.concatenate(v)) for k, v in buf.items()}
    tmp = out / (name + ".tmp")
    save_file(data, str(tmp))
    os.replace(tmp, out / name)
    index["shards"].append({"file": name, "docs": list(docs), "tokens": n_tokens})
    write_json(out / INDEX, index)


class ActivationStore:
    """Read activations written by :func:`write_activations` (memory-mapped shards)."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / INDEX).exists():
            raise MissingFile(
                f"{self.path} has no {INDEX}: write activations there with write_activations()."
            )
        self.index = json.loads((self.path / INDEX).read_text())

    @property
    def sites(self) -> list[str]:
        return list(self.index["widths"])

    @property
    def n_tokens(self) -> int:
        return sum(s["tokens"] for s in self.index["shards"])

    def shards(self):
        """Yield each shard as a dict of memory-mapped arrays."""
        for shard in self.index["shards"]:
            yield open_mmap(self.path / shard["file"])

    def load(self, key: str) -> torch.Tensor:
        """One site (or ``doc``/``pos``/``token_id``) over every token, concatenated."""
        if key not in self.index["widths"] and key not in ("doc", "pos", "token_id"):
            raise NotFound(f"'{key}' is not stored here; sites: {self.sites}.")
        return torch.from_numpy(np.concatenate([s[key] for s in self.shards()]))
