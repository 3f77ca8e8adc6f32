"""Reading evaluations E1 (sign-only LM head), E2 (decoder-free Hamming readout), E9 (sign MI).

Collect states once on real text with :func:`collect_states`, then call the evaluations; every
evaluation returns a JSON-serialisable dict of numbers (per site where it takes several sites).

Choices (the paper is silent; see notes/bagofdims-paper.md):

- Evaluation text: packaged English documents (:mod:`bagofdims.text`), each text alone (no
  packing), truncated to ``max_length`` tokens, right-padded. A position counts when the token
  after it is a real token of the same text, so the true next token exists; the first
  ``n_positions`` such positions (texts in the order given) are kept.
- E1 ``scaled``: the per-dim mean ``|h|`` is estimated in-sample (on the evaluated states) and,
  as ``scaled_heldout``, 2-fold cross-fitted (scale from the other half of the positions).
- E9: pairs with a dim whose sign is constant over the sample count as MI 0 (exact), and
  are kept out of the plug-in computation.
- E2 (a): each site's states are read against the cached sign patterns of the vocabulary at the
  same site (``against="same"``); ``against="final"`` reads every site against the ``final``
  cache instead. (b): against the signs of the unembedding (LM head) rows, for sites of the
  model's width. Ties in agreement go to the lowest token id (as in ``hamming.hamming_topk``).
"""

from __future__ import annotations

import torch

from bagofdims import readers, stats
from bagofdims.capture import Capture, no_cache_kwargs
from bagofdims.errors import InvalidArgument
from bagofdims.inputs import TextStart, resolve_prefix
from bagofdims.signs import bits
from bagofdims.sites import resolve

__all__ = [
    "collect_states",
    "e1_by_site",
    "e1_sign_lm_head",
    "e2_hamming",
    "e9_by_site",
    "e9_mi",
    "final_norm",
]

_ROWS = 256  # positions per block of [rows, V] logits


def collect_states(
    model,
    tok,
    texts=None,
    sites=("final",),
    n_positions: int = 1000,
    max_length: int = 128,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    bos: bool | None = None,
    bos_token: int | str | None = None,
) -> dict:
    """States at each site for ``n_positions`` real token positions, with next-token targets.

    Returns ``{"states": {site: [n, d]}, "own_pred": int64 [n], "true_next": int64 [n],
    "current": int64 [n], "n_texts": int, "n_positions": n}``: ``own_pred`` is the argmax of
    the model's real logits at the position, ``true_next`` the token that follows in the text,
    ``current`` the token at the position itself. Padding and each text's last token are
    skipped, and so is a leading start token: the one the tokenizer adds, or the document-start
    token that ``bos`` puts before every text that lacks it (the sign cache's rule, see
    :func:`bagofdims.inputs.resolve_prefix`: by default for decoder LMs, so that no text token
    sits at the position-0 attention sink). ``texts`` defaults to the packaged Wikipedia
    summaries.
    """
    if texts is None:
        from bagofdims.text import english_documents

        texts = english_documents("wiki")
    if n_positions < 1:
        raise InvalidArgument("n_positions must be at least 1.")
    names = [s.name for s in resolve(model, sites)]
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    start = TextStart(tok, resolve_prefix(model, tok, bos, bos_token)[0])
    got = {name: [] for name in names}
    own, true, cur = [], [], []
    total, used, pending = 0, 0, []
    texts = iter(texts)

    def run(batch: list[tuple[list[int], int]]) -> None:
        first = torch.tensor([lead for _, lead in batch])
        batch = [x for x, _ in batch]
        lens = torch.tensor([len(x) for x in batch])
        width = int(lens.max())
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for i, x in enumerate(batch):  # loop over texts, not tokens
            ids[i, : len(x)] = torch.tensor(x)
        mask = (torch.arange(width) < lens[:, None]).long()
        pos = torch.arange(width)
        keep = (pos < lens[:, None] - 1) & (pos >= first[:, None])  # has a real next token
        nxt = torch.cat([ids[:, 1:], ids[:, :1]], 1)
        with torch.inference_mode(), Capture(model, names) as cap:
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        **no_cache_kwargs(model))
            k = keep.to(device)
            for name in names:
                got[name].append(cap[name][k].to(dtype))
            own.append(out.logits[k].argmax(-1))
        true.append(nxt[keep].to(device))
        cur.append(ids[keep].to(device))

    for text in texts:
        x, skip = start(tok(text, truncation=True, max_length=max_length)["input_ids"], max_length)
        if len(x) - skip < 2:
            continue
        pending.append((x, skip))
        used += 1
        total += len(x) - 1 - skip
        if len(pending) == batch_size or total >= n_positions:
            run(pending)
            pending = []
        if total >= n_positions:
            break
    if pending:
        run(pending)
    if total < n_positions:
        raise InvalidArgument(f"the texts give only {total} positions, fewer than n_positions="
                         f"{n_positions}; pass more (or longer) texts or lower n_positions.")
    n = n_positions
    return {
        "states": {name: torch.cat(v)[:n] for name, v in got.items()},
        "own_pred": torch.cat(own)[:n],
        "true_next": torch.cat(true)[:n],
        "current": torch.cat(cur)[:n],
        "n_texts": used,
        "n_positions": n,
    }


def _hits(logits: torch.Tensor, own: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row hit indicators (top-1/top-5 of own and true) and own's rank, for one block."""
    top5 = logits.topk(5, dim=1).indices
    own_logit = logits.gather(1, own[:, None])
    return {
        "top1_own": top5[:, 0] == own,
        "top5_own": (top5 == own[:, None]).any(1),
        "top1_true": top5[:, 0] == true,
        "top5_true": (top5 == true[:, None]).any(1),
        "rank_own": (logits > own_logit).sum(1),
    }


def _summarise(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    out = {k: float(v.double().mean()) for k, v in cat.items() if k != "rank_own"}
    out["median_rank_own"] = float(cat["rank_own"].double().median())
    return out


def e1_sign_lm_head(
    model,
    states_final: torch.Tensor,
    own_pred: torch.Tensor,
    true_next: torch.Tensor,
    fracs=(0.01, 0.05, 0.1, 0.25, 0.5),
) -> dict:
    """E1/E1b: agreement of the sign-only LM head with the model's prediction and the text.

    Keys: ``model`` (the real head on the same states: top-1/5 vs the true next token; its
    ``top1_own`` is a consistency check, 1.0 up to ties), ``all`` (every dim's sign),
    ``top_<frac>`` (only the top ``frac`` of dims by ``|h|``), ``scaled`` (signs times the
    in-sample per-dim mean ``|h|``), ``scaled_heldout`` (same, scale 2-fold cross-fitted), plus
    ``n``, ``vocab`` and ``chance_top5``. Each entry has ``top1_own``, ``top5_own``,
    ``top1_true``, ``top5_true`` (fractions of positions) and ``median_rank_own`` (0-based).
    """
    n = states_final.shape[0]
    if own_pred.shape != (n,) or true_next.shape != (n,):
        raise InvalidArgument(f"own_pred and true_next must be [n] = [{n}] like the states.")
    head = model.get_output_embeddings()
    dev = head.weight.device
    h = states_final.to(dev, torch.float32)
    own, true = own_pred.to(dev), true_next.to(dev)
    half = torch.arange(n, device=dev) < n // 2
    scale_in = readers.mean_abs_scale(h)
    # 2-fold cross-fit: each half is scaled by the mean |h| of the other half
    scale_a = readers.mean_abs_scale(h[~half]) if n > 1 else scale_in
    scale_b = readers.mean_abs_scale(h[half]) if n > 1 else scale_in
    variants = {"model": None, "all": {"mode": "all"}, "scaled": {"mode": "scaled", "scale": scale_in}}
    variants.update({f"top_{f:g}": {"mode": "top", "top_frac": f} for f in fracs})
    parts: dict[str, list] = {name: [] for name in [*variants, "scaled_heldout"]}
    with torch.no_grad():
        for r0 in range(0, n, _ROWS):
            sl = slice(r0, r0 + _ROWS)
            hb, ob, tb = h[sl], own[sl], true[sl]
            for name, kw in variants.items():
                logits = head(hb.to(head.weight.dtype)) if kw is None else \
                    readers.sign_lm_head(model, hb, **kw)
                parts[name].append(_hits(logits.float(), ob, tb))
            scale_rows = torch.where(half[sl, None], scale_a, scale_b)  # [rows, d]
            logits = head((torch.sign(hb) * scale_rows).to(head.weight.dtype))
            parts["scaled_heldout"].append(_hits(logits.float(), ob, tb))
    out: dict = {name: _summarise(p) for name, p in parts.items()}
    vocab = int(head.weight.shape[0])
    out.update(n=n, vocab=vocab, chance_top5=5 / vocab)
    return out


def final_norm(model, states: torch.Tensor) -> torch.Tensor:
    """Apply the model's final norm (the module of site ``final``) to residual states."""
    site = resolve(model, ["final"])[0]
    norm = model.get_submodule(site.module_path)
    with torch.no_grad():
        return norm(states.to(next(norm.parameters()).dtype)).float()


def e1_by_site(model, states_by_site: dict, own_pred, true_next, fracs=()) -> dict:
    """E1 at every site (logit lens): residual states go through the final norm first.

    States of ``final`` are used as they are. Default ``fracs=()`` keeps it fast (model, all,
    scaled, scaled_heldout per site).
    """
    out = {}
    for site, x in states_by_site.items():
        hf = x if site == "final" else final_norm(model, x)
        out[site] = e1_sign_lm_head(model, hf, own_pred, true_next, fracs=fracs)
    return out


def _row_map(token_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """token id -> key row (-1 where the token is not among the keys)."""
    row_of = torch.full((vocab,), -1, dtype=torch.int64)
    row_of[token_ids] = torch.arange(len(token_ids))
    return row_of


def _rows(row_of: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    ids = ids.cpu()
    ok = (ids >= 0) & (ids < len(row_of))
    return torch.where(ok, row_of[ids.clamp(0, len(row_of) - 1)], -1)


def _readout_metrics(states, keys, d, targets: dict, ks) -> dict[str, float]:
    n_keys = keys.shape[0]
    out: dict[str, float] = {}
    ranks = readers.hamming_ranks(states, keys, d, torch.stack(list(targets.values()), 1)
                                  .to(states.device)).cpu()
    for j, tag in enumerate(targets):
        r = ranks[:, j]
        for k in ks:
            out[f"{tag}_top{k}"] = float((r < k).double().mean())
        out[f"{tag}_median_rank"] = float(r.double().median())
    for k in ks:
        out[f"chance_top{k}"] = min(1.0, k / n_keys)
    out["n_keys"] = n_keys
    return out


def e2_hamming(
    states_by_site: dict,
    cache,
    model,
    own_pred: torch.Tensor,
    true_next: torch.Tensor,
    ks=(1, 100, 4096),
    against: str = "same",
    unembedding: bool = True,
    current: torch.Tensor | None = None,
) -> dict:
    """E2 per site: is the model's own / the true next token in the Hamming top-k?

    For each site: ``cache`` (a) = keys are the cache's sign patterns at the same site
    (``against="same"``) or at ``final`` (``against="final"``); ``unembed`` (b) = keys are the
    LM head rows' signs (sites of the model's width only); and, when the input embedding is not
    tied to the LM head, ``embed`` = the embedding rows' signs (the re-encoding baseline). Each
    holds ``own_top{k}``, ``true_top{k}``, ``own_median_rank``, ``true_median_rank``,
    ``chance_top{k}`` (= k / number of keys) and ``n_keys``. With ``current`` (the token at
    each position, from :func:`collect_states`) also ``cur_top{k}`` / ``cur_median_rank``: a
    single-token cache pattern describes the token it was computed from, so this diagnostic
    shows whether a readout finds the current token rather than the next one.
    """
    if against not in ("same", "final"):
        raise InvalidArgument(f"against must be 'same' or 'final', got {against!r}.")
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings().weight
    refs = {}
    if unembedding and head is not None:
        refs["unembed"] = readers.unembedding_signs(model)
        if emb.data_ptr() != head.weight.data_ptr():
            refs["embed"] = bits.pack_signs(emb.detach())
    vocab = int(max(head.weight.shape[0] if head is not None else 0, int(cache.meta.vocab_size)))
    cache_rows = _row_map(cache.token_ids, vocab)
    ident = _row_map(torch.arange(vocab), vocab)

    def targets(row_of):
        t = {"own": _rows(row_of, own_pred), "true": _rows(row_of, true_next)}
        if current is not None:
            t["cur"] = _rows(row_of, current)
        return t

    t_cache, t_ident = targets(cache_rows), targets(ident)
    out = {}
    for site, x in states_by_site.items():
        key_site = site if against == "same" else "final"
        d = cache.width(key_site)
        if x.shape[-1] != d:
            raise InvalidArgument(f"states of {site} have width {x.shape[-1]} but the cache's "
                             f"{key_site} has width {d}.")
        keys = cache.packed(key_site, device=x.device)
        res = {"cache": _readout_metrics(x, keys, d, t_cache, ks)}
        for name, ref in refs.items():
            if x.shape[-1] == emb.shape[1]:  # the model's width: a residual-stream site
                rows = {k: torch.where(v < ref.shape[0], v, -1) for k, v in t_ident.items()}
                res[name] = _readout_metrics(x, ref.to(x.device), d, rows, ks)
        out[site] = res
    return out


def _mi_stats(x: torch.Tensor) -> tuple[float, float, int]:
    """Mean and max off-diagonal sign MI over all d dims, and the number of constant-sign dims.

    A dim whose sign never changes over the sample has zero entropy, so its MI with any dim is
    exactly 0. It is left out of the matrix (where float rounding of its empty 2x2 cells could
    otherwise give 0 * log 0 terms that are not 0) and counted back as zeros in the mean.
    """
    d = x.shape[1]
    p1 = (x > 0).to(torch.float64).mean(0)
    keep = (p1 > 0) & (p1 < 1)
    k = int(keep.sum())
    if k < 2:
        return 0.0, 0.0, d - k
    mi = stats.sign_mutual_information(x[:, keep])
    vals = mi[~torch.eye(k, dtype=torch.bool, device=mi.device)]
    mean = float(vals.sum()) / (d * (d - 1))
    return mean, float(vals.max()), d - k


def e9_mi(states: torch.Tensor, seed: int = 0) -> dict:
    """E9: mean / max pairwise sign MI (bits) of states ``[n, d]`` and of a rotated copy.

    The control is ``states @ R`` with ``R = stats.random_rotation(d, seed)``, as in
    :func:`bagofdims.stats.mi_summary`: a rotated code also has low pairwise sign MI, so the
    pair of numbers, not the first alone, says whether the standard basis is special. Keys:
    ``mean_mi``, ``max_mi``, ``mean_mi_rotated``, ``max_mi_rotated``, ``constant_dims`` (dims
    whose sign never changes in the sample; their MI is 0), ``constant_dims_rotated``, ``n``, ``d``.
    """
    if states.dim() != 2 or states.shape[1] < 2 or states.shape[0] == 0:
        raise InvalidArgument(f"e9_mi needs states [n, d] with n >= 1 and d >= 2, got {tuple(states.shape)}.")
    x = states.to(torch.float32)
    rot = x @ stats.random_rotation(x.shape[1], seed, dtype=torch.float32, device=x.device)
    out: dict = {}
    out["mean_mi"], out["max_mi"], out["constant_dims"] = _mi_stats(x)
    out["mean_mi_rotated"], out["max_mi_rotated"], out["constant_dims_rotated"] = _mi_stats(rot)
    out.update(n=int(x.shape[0]), d=int(x.shape[1]))
    return out


def e9_by_site(states_by_site: dict, seed: int = 0) -> dict:
    """:func:`e9_mi` for every site."""
    return {site: e9_mi(x, seed) for site, x in states_by_site.items()}
