"""Reading with a catalog: which features fire on each token of a live text, and what a single
dim means (its most typical tokens of each sign)."""

from __future__ import annotations

import torch

from bagofdims.capture import Capture
from bagofdims.devices import input_device
from bagofdims.errors import CatalogError, InvalidArgument, NotFound, OutOfRange
from bagofdims.inputs import TextStart
from bagofdims.signs import bits


def explain_dim(cat, site: str, dim: int, k: int = 10) -> dict:
    """Tokens most positive and most negative on a dim, and the features it belongs to.

    Ranked by value when the cache has magnitudes (``ranked_by="value"``); else by
    typicality (``ranked_by="typicality"``): among the tokens of each sign, those whose whole
    sign pattern agrees most with the mean sign difference between the dim's positive and
    negative tokens, i.e. the clearest members of each side.
    """
    if site not in cat.sites:
        raise NotFound(f"Site '{site}' is not in this catalog; it has {cat.sites}.")
    width = cat.cache.width(site)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim < width:
        raise OutOfRange(f"dim {dim!r} is out of range for {site} (width {width}: 0..{width - 1}).")
    signs = cat.cache.signs(site)
    col = signs[:, dim].float()
    if cat.cache.meta.magnitudes:
        pos_key = neg_key = cat.cache.magnitudes(site)[:, dim].float()
        ranked_by = "value"
    else:
        s = signs.float()
        pos, neg = col > 0, col < 0
        contrast = (s[pos].mean(0) - s[neg].mean(0)) if pos.any() and neg.any() else \
            torch.zeros(s.shape[1])
        contrast[dim] = 0.0  # the dim itself says nothing about typicality
        pos_key = s @ contrast
        neg_key = -pos_key
        ranked_by = "typicality"
    minus_inf = torch.tensor(float("-inf"))
    pos_key = torch.where(col > 0, pos_key, minus_inf)
    neg_key = torch.where(col < 0, neg_key, minus_inf)
    top = pos_key.topk(min(k, int((col > 0).sum()))).indices
    bottom = neg_key.topk(min(k, int((col < 0).sum()))).indices
    return {
        "site": site, "dim": dim, "ranked": ranked_by == "value", "ranked_by": ranked_by,
        "positive_rate": float((col > 0).float().mean()),
        "most_positive": cat._text(cat.cache.token_ids[top]),
        "most_negative": cat._text(cat.cache.token_ids[bottom]),
        "features": [(f.name, s) for f, s in cat.features_of_dim(site, dim)],
    }


def read_text(cat, text: str, model, tokenizer=None, site: str | None = None,
              top: int = 3) -> list[dict]:
    """Run ``text`` through ``model``; per token, the features that fire at ``site``.

    A feature fires on a token when its score reaches the feature's threshold (the 99th
    percentile of non-member vocabulary tokens). The text follows the start token the
    cache put before each vocabulary token (``meta.bos_id``), if any, so no text token sits
    at the position-0 attention sink; that start token is not listed. ``model`` must be the
    catalog's model (checked); ``tokenizer`` defaults to the one given to build/load.
    """
    if cat.meta.examples:
        raise CatalogError("This catalog is over examples: read new ones with "
                           "cat.read_inputs(inputs, model, processor).")
    if model is None:
        raise InvalidArgument("Catalog.read needs the model (the catalog never loads one): pass "
                              f"model=bagofdims.load_model({cat.model_name!r})[0].")
    site = site or cat.sites[len(cat.sites) // 2]
    feats = cat.at(site)
    if not feats:
        raise NotFound(f"No features at {site}; this catalog has sites {cat.sites}.")
    if not isinstance(text, str) or not text:
        raise InvalidArgument("text must be a non-empty string.")
    cat.check_model(model)
    if tokenizer is not None:
        cat.tokenizer = tokenizer  # checked against the catalog's fingerprint
    tok = cat.tokenizer
    ids, lead = TextStart(tok, cat.meta.bos_id)(tok(text)["input_ids"])
    x = torch.tensor([ids], device=input_device(model))
    with torch.no_grad(), Capture(model, [site], stop=True) as cap:
        cap.run(input_ids=x, attention_mask=torch.ones_like(x))
    states = cap[site][0, lead:]
    w = bits.feature_matrix([(f.dims, f.signs) for f in feats], states.shape[-1])
    s = bits.feature_scores(states.float().cpu(), w)
    thr = torch.tensor([f.threshold if f.threshold is not None else 1.0 for f in feats])
    out = []
    for t, tid in enumerate(ids[lead:]):
        fire = (s[t] >= thr).nonzero()[:, 0]
        ranked = sorted(((feats[j].name, float(s[t, j])) for j in fire.tolist()),
                        key=lambda x: -x[1])[:top]
        out.append({"token": tok.decode([tid]), "features": ranked})
    return out
