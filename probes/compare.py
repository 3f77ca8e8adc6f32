"""Trained probes vs the catalog's sign prototypes, on the catalog's own held-out protocol.

For every catalog feature at one site, a logistic probe (and optionally an MLP) is trained on
the feature's anchors against the rest of the vocabulary and tested on the same held-out members
the catalog used, with the negatives split into folds (`probes.cv.cross_validate`). The
prototype's score (fraction of the feature's dims whose sign agrees) is scored on exactly the
same test rows, so every probe-minus-prototype gain is paired. Anchors are only ever training
rows. The probe's weights are then compared with the prototype: sign agreement on the
prototype's dims, and the share of |w| (standardised units) those dims carry vs chance |D|/d.

The logistic penalty is fixed (`l2`) or chosen per category and outer fold by inner CV on that
fold's training rows (`l2_grid`, see `probes.cv.select_l2`). With `rotation_seed` the whole
logistic comparison is repeated in a Haar-randomly rotated basis against prototypes found again
there (`probes.alignment.rotated_basis`): if the probe were axis-aligned, its |w| share on the
standard-basis prototype dims would exceed the rotated probe's share on the rotated prototype's.

Inputs: "signs" (the cached ±1 signs) and "states" (raw float states: signs x magnitudes when
the cache stores magnitudes, otherwise one forward pass per vocabulary token, as the cache
itself was built).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

from bagofdims.features.discovery import DiscoveryConfig
from bagofdims.signs import bits

from ._auc import rank_auc
from .alignment import axis_alignment, mlp_weights, rotated_basis
from .cv import cross_validate
from .logistic import LogisticProbe
from .mlp import MLPProbe
from bagofdims.errors import InvalidArgument, NotFound

INPUTS = ("signs", "states")
COLUMNS = ("category", "input", "n_held_out", "n_dims", "l2", "proto_auc", "logistic_auc", "gain",
           "mlp_auc", "mlp_gain", "sign_agreement", "mass_on_dims", "chance_mass",
           "mlp_sign_agreement", "mlp_mass_on_dims", "rot_proto_auc", "rot_logistic_auc",
           "rot_sign_agreement", "rot_mass_on_dims")
ROTATED = ("rot_proto_auc", "rot_logistic_auc", "rot_sign_agreement", "rot_mass_on_dims")


@dataclass
class ProbeReport:
    """Per-category, per-input comparison rows plus the settings that produced them."""

    model: str
    site: str
    rows: list[dict]  # one per (category, input); keys = COLUMNS (+ catalog_auc, fold gains)
    settings: dict = field(default_factory=dict)
    # Not serialised: per input, fold-averaged standardised logistic weights [d, k], the CV
    # result (test masks, folds, scores) and the cache rows used (row i of X = cache row rows[i]).
    weights: dict = field(default_factory=dict, repr=False)
    cv: dict = field(default_factory=dict, repr=False)
    rows_used: torch.Tensor | None = field(default=None, repr=False)

    def records(self, input: str | None = None) -> list[dict]:
        return [r for r in self.rows if input is None or r["input"] == input]

    def summary(self) -> dict:
        """Per input: mean / std / median AUC gain of the probe over the prototype, the fraction
        of categories where the probe wins, mean sign agreement and |w| share (and MLP gain)."""
        out = {}
        for inp in dict.fromkeys(r["input"] for r in self.rows):
            rs = self.records(inp)
            gain = torch.tensor([r["gain"] for r in rs], dtype=torch.float64)
            s = {
                "n_categories": len(rs),
                "proto_auc_mean": _mean([r["proto_auc"] for r in rs]),
                "logistic_auc_mean": _mean([r["logistic_auc"] for r in rs]),
                "gain_mean": float(gain.mean()),
                "gain_std": float(gain.std()) if len(rs) > 1 else float("nan"),
                "gain_median": float(gain.median()),
                "gain_fold_mean": _mean([r["fold_gain_mean"] for r in rs]),
                "probe_wins": float((gain > 0).double().mean()),
                "sign_agreement_mean": _mean([r["sign_agreement"] for r in rs]),
                "sign_agreement_pooled": _ratio(rs),
                "mass_on_dims_mean": _mean([r["mass_on_dims"] for r in rs]),
                "chance_mass_mean": _mean([r["chance_mass"] for r in rs]),
                "l2_chosen": {f"{v:g}": c for v, c in sorted(
                    Counter(r["l2"] for r in rs if not math.isnan(r["l2"])).items())},
            }
            if all(c in r for r in rs for c in ROTATED):
                s.update({f"{c}_mean": _mean([r[c] for r in rs]) for c in ROTATED})
            mg = [r["mlp_gain"] for r in rs if not math.isnan(r["mlp_gain"])]
            if mg:
                t = torch.tensor(mg, dtype=torch.float64)
                s.update(mlp_categories=len(mg), mlp_gain_mean=float(t.mean()),
                         mlp_gain_std=float(t.std()) if len(mg) > 1 else float("nan"),
                         mlp_sign_agreement_mean=_mean(
                             [r["mlp_sign_agreement"] for r in rs if not math.isnan(r["mlp_gain"])]),
                         mlp_minus_logistic_mean=_mean(
                             [r["mlp_auc"] - r["logistic_auc"] for r in rs
                              if not math.isnan(r["mlp_gain"])]))
            out[inp] = s
        return out

    def table(self, input: str | None = None) -> str:
        """Markdown table, one row per category and input, with the columns in COLUMNS."""
        head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
        body = "".join("| " + " | ".join(_fmt(r.get(c, math.nan), c == "l2") for c in COLUMNS)
                       + " |\n" for r in self.records(input))
        return head + body

    def to_dict(self) -> dict:
        return {"model": self.model, "site": self.site, "settings": self.settings,
                "summary": self.summary(), "rows": self.rows}


def _mean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _ratio(rs) -> float:
    """Sign agreement pooled over all prototype dims of all categories."""
    tot = sum(r["n_dims"] for r in rs)
    return sum(r["sign_agreement"] * r["n_dims"] for r in rs) / tot if tot else float("nan")


def _fmt(v, general: bool = False) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else (f"{v:g}" if general else f"{v:.3f}")
    return str(v)


def vocab_states(model, cache, site: str, rows=None, batch_size: int = 256) -> torch.Tensor:
    """Raw float32 states ``[len(rows), d]`` of cached vocabulary tokens at ``site``: one forward
    pass per single token (BOS first if the cache was built with it), as the cache was built."""
    from bagofdims.capture import Capture
    from bagofdims.inputs import SingleTokenInputs

    cache.check(model=model)
    rows = torch.arange(len(cache)) if rows is None else torch.as_tensor(rows, dtype=torch.long)
    ids = cache.token_ids[rows]
    bos_id = cache.meta.bos_id if cache.meta.bos else None
    inputs = SingleTokenInputs(model, bos_id)
    out = torch.empty(len(ids), cache.width(site), dtype=torch.float32)
    with torch.inference_mode(), Capture(model, [site], stop=True, position=-1) as cap:
        for s in range(0, len(ids), batch_size):
            batch = ids[s:s + batch_size]
            cap.run(**inputs(batch))
            out[s:s + len(batch)] = cap[site].float().reshape(len(batch), -1).cpu()
    return out


def _states(cache, site, sub, model, states, batch_size) -> torch.Tensor:
    if states is not None:
        st = torch.as_tensor(states)
        if st.shape[0] != len(cache):
            raise InvalidArgument(f"states must cover every cached token: [{len(cache)}, d], got "
                             f"{tuple(st.shape)}")
        return st[sub].float()
    if cache.meta.magnitudes:
        packed = cache.packed(site)[sub]
        sg = bits.unpack_signs(packed, cache.width(site), torch.float32)
        return sg * cache.magnitudes(site)[sub].float()
    if model is None:
        raise InvalidArgument(
            "inputs include 'states' but this cache stores only signs: pass "
            f"model=bagofdims.load_model({cache.model_name!r})[0] (or states=[n_tokens, d]), "
            "or use inputs=('signs',)")
    return vocab_states(model, cache, site, sub, batch_size)


def compare_to_catalog(cache, cat, site: str, inputs=INPUTS, folds: int = 5, *, model=None,
                       states=None, l2: float = 1e-3, l2_grid=None, inner_folds: int = 3,
                       inner_negatives: int | None = 8192, rotation_seed: int | None = None,
                       mlp: bool | int | list[str] = False, mlp_kwargs: dict | None = None,
                       max_negatives: int | None = None, seed: int = 0,
                       batch_size: int = 256) -> ProbeReport:
    """Probes vs the catalog's prototypes at ``site``, per category and input (see module doc).

    cache: the `SignCache` the catalog was built from. cat: a `Catalog`.
    inputs: any of "signs", "states". model: needed for "states" (and the rotation control)
        when the cache has no magnitudes; states: optional raw states [len(cache), d].
    folds: negatives (and held-out members) are split into this many folds.
    l2: fixed logistic penalty (LogisticProbe, standardised inputs), used when l2_grid is None.
    l2_grid: penalties to choose from per category and outer fold by inner CV on the fold's
        training rows (`probes.cv.select_l2`, `inner_folds`, `inner_negatives`).
    rotation_seed: also run the rotation control (`rotated_basis`): the same probe on the states
        rotated by a Haar-random R, against prototypes found again in that basis (rot_* columns).
    mlp: False, True (every category), an int n (n categories evenly spaced in catalog order)
        or a list of category names; MLPProbe(**mlp_kwargs), scored against the prototype on
        its own test rows.
    max_negatives: keep at most this many non-member tokens (seeded sample; the same rows for
        the probe and the prototype), to bound runtime on large vocabularies.
    """
    bad = [i for i in inputs if i not in INPUTS]
    if bad or not inputs:
        raise InvalidArgument(f"inputs must be a non-empty subset of {INPUTS}; got {tuple(inputs)}")
    feats = cat.at(site)
    if not feats:
        raise NotFound(f"the catalog has no features at {site!r}; its sites: {cat.sites}")
    n, d = len(cache), cache.width(site)
    anchors = [cache.rows(f.anchors) for f in feats]
    held = [cache.rows(f.held_out) for f in feats]
    sub = _row_subset(n, anchors + held, max_negatives, seed)
    remap = lambda r: torch.searchsorted(sub, r)  # noqa: E731 - rows of the subset
    pos_s, held_s = [remap(a) for a in anchors], [remap(h) for h in held]
    packed = cache.packed(site)[sub]
    dims = [torch.as_tensor(f.dims, dtype=torch.long) for f in feats]
    sgns = [torch.as_tensor(f.signs) for f in feats]
    mlp_cols = _mlp_columns(mlp, [f.name for f in feats])
    probe_kw = dict(folds=folds, seed=seed, l2=l2, l2_grid=l2_grid, inner_folds=inner_folds,
                    inner_negatives=inner_negatives)
    st = (_states(cache, site, sub, model, states, batch_size)
          if "states" in inputs or rotation_seed is not None else None)
    rot = None
    if rotation_seed is not None:
        config = DiscoveryConfig(**{k: v for k, v in feats[0].params.items()
                                    if k in DiscoveryConfig.__dataclass_fields__})
        rot = rotated_basis(st, pos_s, config, seed=rotation_seed)

    rows: list[dict] = []
    report = ProbeReport(model=cache.model_name, site=site, rows=rows, rows_used=sub)
    for inp in inputs:
        X = bits.unpack_signs(packed, d, torch.float32) if inp == "signs" else st
        lg = _logistic(X, pos_s, held_s, packed, d, dims, sgns, **probe_kw)
        report.weights[inp], report.cv[inp] = lg["W"], lg["cv"]
        rr = None
        if rot is not None:
            Xr = bits.unpack_signs(rot.packed, d, torch.float32) if inp == "signs" else rot.states
            rr = _logistic(Xr, pos_s, held_s, rot.packed, d, rot.dims, rot.signs, **probe_kw)
        nan = torch.full((len(feats),), float("nan"), dtype=torch.float64)
        m_auc, m_gain, m_agree, m_mass = nan.clone(), nan.clone(), nan.clone(), nan.clone()
        if mlp_cols:
            kw = dict(mlp_kwargs or {})
            kw.setdefault("seed", seed)
            mcv = cross_validate(X, [pos_s[j] for j in mlp_cols], [held_s[j] for j in mlp_cols],
                                 folds, probe=lambda: MLPProbe(**kw), seed=seed, keep_probes=True)
            mp = rank_auc(lg["proto"][:, mlp_cols], mcv.labels, mcv.tested)
            m_auc[mlp_cols], m_gain[mlp_cols] = mcv.auc.cpu().double(), (mcv.auc.cpu() - mp.cpu()).double()
            # the MLP's first layer, read through its mean input gradients (standardised units),
            # averaged over folds like the logistic weights
            G = torch.stack([mlp_weights(p, X) for p in mcv.probes]).mean(0)
            mal = axis_alignment(G.reshape(G.shape[0], -1), [dims[j] for j in mlp_cols],
                                 [sgns[j] for j in mlp_cols])
            m_agree[mlp_cols] = mal.sign_agreement.cpu().double()
            m_mass[mlp_cols] = mal.mass_on_dims.cpu().double()
            mcv.probes = []
        cv, al = lg["cv"], lg["align"]
        for j, f in enumerate(feats):
            row = {
                "category": f.name, "input": inp, "n_held_out": int(cv.n_test_pos[j]),
                "n_dims": int(len(f.dims)), "n_negatives": int(cv.n_test_neg[j]),
                "proto_auc": float(lg["proto_auc"][j]), "logistic_auc": float(cv.auc[j]),
                "gain": float(cv.auc[j] - lg["proto_auc"][j]),
                "fold_gain_mean": float(lg["fold_gain"][j]),
                "l2": _l2_summary(cv.l2[:, j]), "l2_folds": cv.l2[:, j].tolist(),
                "mlp_auc": float(m_auc[j]), "mlp_gain": float(m_gain[j]),
                "sign_agreement": float(al.sign_agreement[j]),
                "mass_on_dims": float(al.mass_on_dims[j]), "chance_mass": float(al.chance_mass[j]),
                "mlp_sign_agreement": float(m_agree[j]), "mlp_mass_on_dims": float(m_mass[j]),
                "catalog_auc": float(f.metrics.get("held_out_auc", float("nan"))),
            }
            if rr is not None:
                row.update(rot_proto_auc=float(rr["proto_auc"][j]),
                           rot_logistic_auc=float(rr["cv"].auc[j]),
                           rot_l2=_l2_summary(rr["cv"].l2[:, j]),
                           rot_sign_agreement=float(rr["align"].sign_agreement[j]),
                           rot_mass_on_dims=float(rr["align"].mass_on_dims[j]),
                           rot_chance_mass=float(rr["align"].chance_mass[j]))
            rows.append(row)
    settings = {"inputs": list(inputs), "folds": folds, "l2": None if l2_grid else l2,
                "l2_grid": list(l2_grid) if l2_grid else None, "inner_folds": inner_folds,
                "inner_negatives": inner_negatives, "rotation_seed": rotation_seed, "seed": seed,
                "n_rows": int(len(sub)), "vocab": n, "width": d, "max_negatives": max_negatives,
                "mlp_categories": [feats[j].name for j in mlp_cols],
                "mlp_kwargs": dict(mlp_kwargs or {}) if mlp_cols else None}
    report.settings = settings
    return report


def _logistic(X, pos_s, held_s, packed, d, dims, sgns, *, folds, seed, l2, l2_grid, inner_folds,
              inner_negatives) -> dict:
    """The logistic probe's CV, the prototype (dims, signs over ``packed``) on its test rows,
    and the fold-averaged standardised weights' alignment with the prototype."""
    proto = bits.feature_scores(packed, bits.feature_matrix(list(zip(dims, sgns)), d))
    if l2_grid:
        cv = cross_validate(X, pos_s, held_s, folds, seed=seed, l2_grid=l2_grid,
                            inner_folds=inner_folds, inner_negatives=inner_negatives)
    else:
        cv = cross_validate(X, pos_s, held_s, folds, probe=lambda: LogisticProbe(l2=l2),
                            seed=seed)
    W = cv.weights_std.mean(0)  # the same standardiser in every fold
    return {"cv": cv, "W": W, "proto": proto, "proto_auc": rank_auc(proto, cv.labels, cv.tested),
            "fold_gain": _fold_gain(cv, proto, folds), "align": axis_alignment(W, dims, sgns)}


def _l2_summary(v: torch.Tensor) -> float:
    """The penalty a category used: the median of its per-fold choices (lower median)."""
    return float(v.median())


def _row_subset(n: int, member_sets, max_negatives, seed) -> torch.Tensor:
    """Sorted rows to use: every member of every category plus (a sample of) the rest."""
    if max_negatives is None:
        return torch.arange(n)
    members = torch.zeros(n, dtype=torch.bool)
    members[torch.cat(member_sets)] = True
    others = (~members).nonzero().flatten()
    if len(others) > max_negatives:
        g = torch.Generator().manual_seed(seed + 1)
        others = others[torch.randperm(len(others), generator=g)[:max_negatives]]
    return torch.cat([members.nonzero().flatten(), others]).sort().values


def _fold_gain(cv, proto, folds) -> torch.Tensor:
    """Mean over folds of the paired per-fold gain (probe fold AUC − prototype fold AUC)."""
    pf = torch.stack([rank_auc(proto, cv.labels, cv.fold == f) for f in range(folds)])
    return torch.nanmean(cv.fold_auc.cpu() - pf.cpu(), 0)


def _mlp_columns(mlp, names: list[str]) -> list[int]:
    """Category columns that get an MLP: none, all, n evenly spaced, or the named ones."""
    if mlp is False or mlp is None or mlp == 0:
        return []
    if mlp is True:
        return list(range(len(names)))
    if isinstance(mlp, int):
        n = min(mlp, len(names))
        return sorted({round(i * (len(names) - 1) / max(n - 1, 1)) for i in range(n)})
    missing = [m for m in mlp if m not in names]
    if missing:
        raise NotFound(f"mlp names {missing} are not categories at this site; have {names}")
    return [names.index(m) for m in mlp]
