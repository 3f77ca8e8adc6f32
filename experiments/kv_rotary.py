"""E5 after RoPE: the signs of every cached token's keys after the rotary embedding.

The paper reads keys after the rotary embedding; the ``k.L`` sites are the K projection (after the
k-norm) before it. :func:`with_rotary_keys` runs each cached token after the cache's start token
(as the cache did) through the headless model once, takes the keys attention scores against
(:func:`bagofdims.steering.tracing.rotary_keys`: the model's own ``apply_rotary_pos_emb`` on the
(cos, sin) each attention module received) at the token's position, and returns the cache with
``k_rot.L`` sites added (in memory). At one fixed position the rotation is the same orthogonal
map for every token, so any change in discoverability comes from how it mixes pairs of dims.

The same pass recomputes ``k.L``; the share of its sign bits equal to the cache's ``k.L``
(``agreement``) checks that the two passes read the same keys (batched two-token forwards vs the
cache's shared start-token key/values: only float rounding may differ).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from tqdm.auto import tqdm

from bagofdims.devices import input_device
from bagofdims.signs import bits
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.steering.tracing import rotary_keys

__all__ = ["with_rotary_keys"]


def with_rotary_keys(cache: SignCache, model, layers, batch_size: int = 256,
                     progress: bool = True) -> tuple[SignCache, dict[str, float]]:
    """``(cache + k_rot.L sites, {k.L: share of sign bits equal to the cache's k.L})``."""
    layers = sorted(set(layers))
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    device = input_device(model)
    tokens = cache.token_ids
    start = cache.meta.bos_id
    packed: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for b in tqdm(range(0, len(tokens), batch_size), desc="keys after RoPE", unit="batch",
                      disable=not progress):
            t = tokens[b:b + batch_size]
            ids = t[:, None] if start is None else torch.stack([torch.full_like(t, start), t], 1)
            for name, value in rotary_keys(decoder, layers, input_ids=ids.to(device)).items():
                packed.setdefault(name, []).append(bits.pack_signs(value[:, -1].float().cpu()).numpy())
    new = {name: np.concatenate(parts) for name, parts in packed.items()}
    agreement = {}
    for L in layers:
        fresh = torch.from_numpy(new[f"k.{L}"])
        width = cache.width(f"k.{L}")
        same = bits.unpack_signs(fresh, width, torch.int8) == cache.signs(f"k.{L}")
        agreement[f"k.{L}"] = float(same.float().mean())
    rot = {f"k_rot.{L}": new[f"k_rot.{L}"] for L in layers}
    sites = {**cache.meta.sites, **{s: cache.width(s.replace("k_rot", "k")) for s in rot}}
    meta = dataclasses.replace(cache.meta, sites=sites)
    signs = {**{s: cache.packed(s).numpy() for s in cache.sites}, **rot}
    signs[TOKEN_IDS] = cache.token_ids.numpy()
    return SignCache(meta, signs), agreement
