"""E7: flip a concept's feature signs in the live forward pass and compare the drop of the
concept's next-token mass with distributions of controls.

The protocol, fixed before any effect is looked at:

1. **Prompts.** Per concept, ``n_select + n_eval`` distinct prompts from its anchor words
   (:func:`bagofdims.steering.prompts.split_prompts`): the first ``n_select`` choose the layer,
   the other ``n_eval`` measure every effect reported.
2. **Layer.** Per concept, the layer of the grid whose ``away`` flip lowers the concept's mass
   most on the selection prompts; the *common* layer is the one with the lowest mean over
   concepts (also on the selection prompts).
3. **Controls at the chosen layer** (evaluation prompts): ``n_draws`` magnitude-stratified and
   ``n_draws`` disjoint uniform dim sets of the feature's size, each flipped away from its usual
   sign; ``toward``; ``single`` (the feature's best dim alone); ``concept`` (an unrelated
   concept's feature at the same layer). p-value: ``(1 + #{draws with a drop >= away's}) / (1 +
   n_draws)``. No draw and no concept is excluded after the fact; draws that contain a
   massive-activation dim are counted, not removed.
4. **Depth profile** (evaluation prompts): ``away`` and ``depth_draws`` stratified draws at every
   layer of the grid.
5. **Specificity** (evaluation prompts): each concept's feature flipped at its chosen layer,
   every concept's mass measured on its own prompts; chance level ``1 / C``.

Called by :mod:`experiments.causal`; the numbers land under ``e7`` of ``causal.json``.
"""

from __future__ import annotations

import time

import torch

from bagofdims.steering.controls import flip_distribution, flip_matrix, pattern_masses, site_statistics
from bagofdims.steering.effects import LABELS, pick_unrelated
from bagofdims.steering.prompts import concept_tokens, split_prompts
from bagofdims.steering.significance import binomial_tail, specificity_stats

__all__ = ["PREFERRED", "choose_layers", "depth_profile", "depth_summary", "pick_concepts",
           "run_e7"]

# concrete, common concepts first (the order picks the first --concepts of them)
PREFERRED = ["vertebrate", "country", "city", "body_part", "element_symbol", "male_name",
             "female_name", "surname", "state_province", "vascular_plant", "container", "unit",
             "organic_compound", "city_europe", "us_city", "bird", "fruit", "color", "vehicle", "tool",
             "disease", "emotion", "musical_instrument", "insect", "weapon", "chemical_element",
             "number_word", "natural_language", "garment", "dish", "drug", "tree", "mineral",
             "occupation", "meat", "herb", "reptile", "fabric", "building", "relative"]
KINDS = ("stratified", "disjoint")
ALPHA = 0.05


def pick_concepts(names: list[str], n: int) -> list[str]:
    """``n`` concepts: the preferred ones the catalog has, in order, topped up with its others."""
    picked = [p for p in PREFERRED if p in names][:n]
    return picked + [m for m in names if m not in picked][: n - len(picked)]


def choose_layers(model, tok, feats: dict, prompts: list[str], tokens, sites: list[str],
                  rows_per_pass: int = 128) -> list[float]:
    """Mean ``away`` change of the mass at every site on ``prompts``: one pattern per site, all
    in batched passes. ``feats``: ``{site: Feature}`` of one concept."""
    width = {s: feats[s].width for s in sites}
    pats = {s: torch.zeros(len(sites) + 1, width[s]) for s in sites}
    for i, s in enumerate(sites):
        pats[s][i + 1] = feats[s].dense(width[s])
    mass = pattern_masses(model, tok, prompts, [tokens], pats, rows_per_pass=rows_per_pass)[..., 0]
    return (mass[1:] - mass[0]).mean(-1).tolist()


def depth_profile(model, tok, feats: dict, prompts: list[str], tokens, sites: list[str],
                  n_draws: int, seed: int, rows_per_pass: int = 128) -> dict:
    """``away`` and ``n_draws`` stratified controls at every site (evaluation prompts)."""
    stats = site_statistics(model, tok, prompts, sites)
    rows = {}
    for s in sites:
        d = flip_distribution(model, tok, feats[s], prompts, tokens, n_draws, ("stratified",),
                              seed=seed, stats=stats[s], rows_per_pass=rows_per_pass)
        ctl = torch.tensor(d.controls["stratified"])
        rows[s] = {"away": d.effects["away"], "control_median": float(ctl.median()),
                   "excess": d.effects["away"] - float(ctl.median()), "p": d.p["stratified"]}
    return rows


def _summary(dists: list[dict], n_draws: int) -> dict:
    """Counts and pooled numbers over concepts for each control kind."""
    out = {}
    for kind in KINDS:
        ps = [d["p"][kind] for d in dists]
        k = sum(p < ALPHA for p in ps)
        as_strong = [sum(c <= d["effects"]["away"] for c in d["controls"][kind]) / n_draws
                     for d in dists]
        out[kind] = {"n_significant": k, "n": len(ps), "expected_by_chance": ALPHA * len(ps),
                     "p_count": binomial_tail(k, len(ps), ALPHA),
                     "median_p": float(torch.tensor(ps, dtype=torch.float64).median()),
                     "share_as_strong": float(torch.tensor(as_strong, dtype=torch.float64).mean()),
                     "n_significant_logp": sum(d["p_logp"][kind] < ALPHA for d in dists),
                     "control_median": float(torch.tensor(
                         [c for d in dists for c in d["controls"][kind]]).median()),
                     "massive_draws": sum(d["massive"][kind] for d in dists)}
    away = torch.tensor([d["effects"]["away"] for d in dists])
    out["away_median"] = float(away.median())
    for key in ("toward", "single", "concept"):
        out[f"{key}_median"] = float(torch.tensor([d["effects"][key] for d in dists]).median())
    return out


def depth_summary(depth: dict, sites: list[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Excess of ``away`` over the stratified-control median in the first and the last third of
    the layer grid: mean over those layers per concept, then the mean over concepts with a
    bootstrap interval over concepts (negative: the flip lowers the mass beyond the controls)."""
    third = max(1, len(sites) // 3)
    parts = {"early": sites[:third], "late": sites[-third:]}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for part, ss in parts.items():
        x = torch.tensor([[depth[n][s]["excess"] for s in ss] for n in depth],
                         dtype=torch.float64).mean(1)
        boots = x[torch.randint(0, len(x), (n_boot, len(x)), generator=g)].mean(1)
        lo, hi = torch.quantile(boots, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        out[part] = {"sites": ss, "mean": float(x.mean()), "lo": lo, "hi": hi}
    return out


def run_e7(model, tok, cat, layers, n_concepts: int, n_select: int, n_eval: int, n_draws: int,
           depth_draws: int, seed: int, rows_per_pass: int = 128) -> dict:
    """The E7 protocol of the module docstring on ``n_concepts`` concepts at ``resid.L``."""
    names = pick_concepts(cat.names, n_concepts)
    sites = [f"resid.{L}" for L in layers]
    feats = {n: {s: cat.get(n, s) for s in sites} for n in names}
    split = {n: split_prompts(feats[n][sites[0]], n_select, n_eval, LABELS.get(n), seed)
             for n in names}
    tokens = {n: concept_tokens(feats[n][sites[0]]) for n in names}
    t0 = time.time()
    sel = {n: choose_layers(model, tok, feats[n], split[n][0], tokens[n], sites, rows_per_pass)
           for n in names}
    chosen = {n: sites[min(range(len(sites)), key=lambda i: sel[n][i])] for n in names}
    mean_sel = torch.tensor([sel[n] for n in names]).mean(0)
    common = sites[int(mean_sel.argmin())]
    print(f"  E7 layers chosen on {n_select} selection prompts ({time.time() - t0:.0f}s): "
          + ", ".join(f"{n} {chosen[n]}" for n in names) + f"; common {common}", flush=True)
    dists, depth = [], {}
    for i, n in enumerate(names):
        t0 = time.time()
        f = feats[n][chosen[n]]
        other = cat.get(pick_unrelated(cat, n, chosen[n]), chosen[n])
        d = flip_distribution(model, tok, f, split[n][1], tokens[n], n_draws, KINDS,
                              extra={"concept": other}, seed=seed, rows_per_pass=rows_per_pass)
        row = d.to_dict()
        row["control_concept"] = other.name
        dists.append(row)
        depth[n] = depth_profile(model, tok, feats[n], split[n][1], tokens[n], sites, depth_draws,
                                 seed, rows_per_pass)
        print(f"  E7 {i + 1}/{len(names)} {n:16s} {chosen[n]:9s} away {d.effects['away']:+.4f}  "
              f"p strat {d.p['stratified']:.3f} disj {d.p['disjoint']:.3f}  "
              f"({time.time() - t0:.0f}s)", flush=True)
    t0 = time.time()
    mat = flip_matrix(model, tok, [feats[n][chosen[n]] for n in names],
                      {n: split[n][1] for n in names}, tokens, rows_per_pass)
    mat["stats"] = specificity_stats(mat["delta_logp"], seed=seed)
    print(f"  specificity ({time.time() - t0:.0f}s): own flip best for "
          f"{mat['stats']['own_best']}/{len(names)} (chance {1 / len(names):.2f})", flush=True)
    return {"names": names, "sites": sites, "chosen": chosen, "common_site": common,
            "selection": sel, "prompts": {n: {"select": s, "eval": e} for n, (s, e) in split.items()},
            "distributions": dists, "summary": _summary(dists, n_draws), "depth": depth,
            "depth_summary": depth_summary(depth, sites, seed=seed),
            "specificity": mat, "labels": {n: LABELS.get(n, n.replace("_", " ")) for n in names},
            "settings": {"n_select": n_select, "n_eval": n_eval, "n_draws": n_draws,
                         "depth_draws": depth_draws, "alpha": ALPHA, "seed": seed,
                         "strata": 10, "massive_ratio": 20.0}}
