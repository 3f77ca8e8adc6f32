"""E7: flip a concept's feature signs in the live forward pass and compare the drop of the
concept's next-token mass with controls, per layer, per concept and across concepts.

Called by :mod:`experiments.causal`; the numbers land under ``e7`` of ``causal.json``.
"""

from __future__ import annotations

import time

import torch

from bagofdims.capture import Capture
from bagofdims.steering.effects import LABELS, flip_effect, specificity_matrix
from bagofdims.steering.interventions import sign_flip

__all__ = ["CONTROLS", "PREFERRED", "control_diagnostics", "pick_concepts", "run_e7"]

# concrete, common concepts first (the order picks the first --concepts of them)
PREFERRED = ["vertebrate", "country", "city", "body_part", "element_symbol", "male_name",
             "female_name", "surname", "state_province", "vascular_plant", "container", "unit",
             "organic_compound", "city_europe", "us_city", "bird", "fruit", "color", "vehicle", "tool",
             "disease", "emotion", "musical_instrument", "insect", "weapon", "chemical_element",
             "number_word", "natural_language", "garment", "dish", "drug", "tree", "mineral",
             "occupation", "meat", "herb", "reptile", "fabric", "building", "relative"]
CONTROLS = ("toward", "random", "disjoint", "concept")


def pick_concepts(names: list[str], n: int) -> list[str]:
    """``n`` concepts: the preferred ones the catalog has, in order, topped up with its others."""
    picked = [p for p in PREFERRED if p in names][:n]
    return picked + [m for m in names if m not in picked][: n - len(picked)]


def _wins(effects, sites, idx_of) -> dict:
    """Does ``away`` lower the mass more than each control, at the layer ``idx_of(effect)``."""
    rows = []
    for e in effects:
        i = idx_of(e)
        d = e.at(i)
        rows.append({"name": e.name, "site": sites[i], **{c: d[c] for c in d},
                     "beats": {c: d["away"] < d[c] for c in CONTROLS},
                     "beats_logp": {c: e.delta_logp["away"][i] < e.delta_logp[c][i]
                                    for c in CONTROLS}})
    return {"rows": rows, "n_beat_all_controls": sum(all(r["beats"].values()) for r in rows),
            "n_beat_all_controls_logp": sum(all(r["beats_logp"].values()) for r in rows),
            "n_beat_each_control": {c: sum(r["beats"][c] for r in rows) for c in CONTROLS},
            "n": len(rows)}


def run_e7(model, tok, cat, layers, n_concepts: int, n_prompts: int, seed: int) -> dict:
    """Flip effects of ``n_concepts`` concepts at ``resid.L`` for every L in ``layers``."""
    names = pick_concepts(cat.names, n_concepts)
    sites = [f"resid.{L}" for L in layers]
    effects = []
    for i, name in enumerate(names):
        t0 = time.time()
        eff = flip_effect(model, tok, cat, name, layers=sites, n_prompts=n_prompts, seed=seed)
        effects.append(eff)
        best = eff.best("away")
        print(f"  E7 {i + 1}/{len(names)} {name:20s} base mass {eff.baseline_mass:.3f}  best "
              f"{sites[best]} away {eff.delta_mass['away'][best]:+.4f}  ({time.time() - t0:.0f}s)",
              flush=True)
    mean_away = torch.tensor([e.delta_mass["away"] for e in effects]).mean(0)
    common = int(mean_away.argmin())
    # Per-concept best layer chosen on the away effect itself (favours away), and one common
    # layer (best mean away effect), reported side by side.
    per_concept = _wins(effects, sites, lambda e: e.best("away"))
    at_common = _wins(effects, sites, lambda e: common)
    t0 = time.time()
    spec = specificity_matrix(model, tok, cat, names, sites[common],
                              prompts={e.name: e.prompts for e in effects})
    diag = control_diagnostics(model, tok, cat, effects, sites[common])
    print(f"  specificity at {sites[common]} ({time.time() - t0:.0f}s): diagonal-best "
          f"{spec['diagonal_rank']:.2f}", flush=True)
    return {"names": names, "sites": sites, "common_site": sites[common],
            "effects": [e.to_dict() for e in effects], "per_concept_best": per_concept,
            "common_layer": at_common, "specificity": spec, "control_diagnostics": diag,
            "labels": {n: LABELS.get(n, n.replace("_", " ")) for n in names}}


def control_diagnostics(model, tok, cat, effects, site: str) -> dict:
    """Which control draws hit a massive-activation dim (mean |x| > 20x the site's median)."""
    rows = {}
    for e in effects:
        f = cat.get(e.name, site)
        enc = tok(e.prompts, return_tensors="pt", padding=True)
        with Capture(model, site) as cap:
            model(**enc)
        mag = cap[site].abs().flatten(0, 1).mean(0)
        ratio = mag / mag.median()
        row = {"feature_max_ratio": float(ratio[f.dims].max())}
        for control in ("random", "disjoint"):
            with sign_flip(model, f, control=control, seed=0) as flip:
                model(**enc)
            d = flip.dims(site)
            row[f"{control}_max_ratio"] = float(ratio[d].max())
            row[f"{control}_massive_dims"] = d[ratio[d] > 20].tolist()
        rows[e.name] = row
    return rows
