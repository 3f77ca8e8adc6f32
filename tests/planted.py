"""A synthetic sign cache with planted category features (for discovery and catalog tests)."""

from __future__ import annotations

import numpy as np
import torch

from bagofdims.signs import bits
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.signs.meta import CacheMeta
from bagofdims.models import tokenizer_fingerprint

import tiny

V, D = 3000, 64
# category name -> (member rows, planted dims, planted signs)
PLANTED = {
    "alpha": (range(100, 190), range(0, 12), 1),
    "beta": (range(300, 390), range(12, 24), -1),
    "gamma": (range(500, 590), range(24, 36), 1),
}


def make_cache(flip_prob: float = 0.1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(V, D, generator=g)
    for rows, dims, sign in PLANTED.values():
        r = torch.tensor(list(rows))[:, None]
        c = torch.tensor(list(dims))[None, :]
        # skew the vocabulary away from the members' sign (real dims are rarely 50/50, and a
        # 50/50 dim caps the per-dim sign AUC at 0.75)
        x[:, c[0]] -= sign * 0.8
        agree = torch.rand(len(rows), len(dims), generator=g) > flip_prob
        mag = x[r, c].abs() + 1.0  # members sit far out on their dims
        x[r, c] = torch.where(agree, sign * mag, -sign * mag)
    tok = tiny.tokenizer(vocab_size=V)
    meta = CacheMeta(model="planted", weights="planted-weights", tokenizer=tokenizer_fingerprint(tok),
                     vocab_size=V, full_vocab=True, n_tokens=V, sites={"resid.0": D, "resid.1": D},
                     bos=False, bos_id=None, bos_token=None, bos_rule="off", dtype="float32",
                     magnitudes=True, batch_size=V, chunk_size=V, tokens_sha256="planted",
                     created="now")
    packed = bits.pack_signs(x).numpy()
    noisy = bits.pack_signs(torch.randn(V, D, generator=g)).numpy()  # resid.1: no structure
    signs = {"resid.0": packed, "resid.1": noisy, TOKEN_IDS: np.arange(V, dtype=np.int64)}
    mags = {"resid.0": x.abs().half().numpy(), "resid.1": torch.ones(V, D).half().numpy()}
    return SignCache(meta, signs, mags), tok, x


def categories():
    return {name: [f"w{i}" for i in rows] for name, (rows, _, _) in PLANTED.items()}


def make_catalog(sites=("resid.*",)):
    """The planted cache and a catalog of its categories: ``(catalog, cache, tokenizer, x)``."""
    from bagofdims import Catalog

    cache, tok, x = make_cache()
    cat = Catalog.build(cache, categories=categories(), sites=list(sites), tokenizer=tok,
                        progress=False)
    return cat, cache, tok, x
