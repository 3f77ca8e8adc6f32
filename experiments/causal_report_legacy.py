"""The causal page as written before E7 measured control distributions (single control draws,
layers chosen on the effect): kept only so that pages written then still regenerate from their
``causal.json`` (:func:`experiments.causal_report.markdown` dispatches here for them)."""

from __future__ import annotations

import torch

from experiments.report import fmt

__all__ = ["markdown"]

CONTROLS = ("toward", "random", "disjoint", "concept")


def _f(x, digits: int = 4) -> str:
    return fmt(x, digits, sign=True)


def markdown(r: dict, files: dict) -> str:
    e5, e6, e7, layers = r["e5"], r["e6"], r["e7"], r["layers"]
    L = [f"# Causal tests on {r['model']}: K/V survival, FFN writers, sign flips", "",
         f"Command: `{r['command']}` ({r['seconds']} s, {r['threads']} CPU thread). Sign cache: "
         f"{r['n_cached_tokens']} tokens ({'whole vocabulary' if r['full_vocab'] else 'subset'}). "
         f"Layers: step {layers[1] - layers[0] if len(layers) > 1 else 1} of {r['n_layers']} "
         f"({layers}). Features: top-32 dims by per-dim AUC from 50 anchors (catalog default).",
         "", "## E5 — K/V survival", "",
         "Discovery rerun on the signs of each site; a category is *discoverable* when its "
         "prototype's held-out AUC against the vocabulary reaches the threshold.", "",
         f"| site | categories | held-out AUC ≥ 0.75 | ≥ 0.9 | mean held-out AUC | mean hard AUC |",
         "|---|---|---|---|---|---|"]
    for site, row in e5["sites"].items():
        L.append(f"| {site} | {row['n_categories']} | {row['discoverable']['0.75']} | "
                 f"{row['discoverable']['0.9']} | {row['mean_held_out_auc']:.3f} | {row['mean_hard_auc']:.3f} |")
    L += ["", f"![E5]({files['e5']})", "", "## E6 — FFN writers", "",
          "Columns of block L's down projection against the features at resid.L (threshold 0.7, "
          "coalition = top-N columns by agreement, majority vote). *cv*: columns chosen on a random "
          "half of the feature's dims, scored on the other half (the in-sample numbers are inflated "
          "by selection on any matrix, as the Gaussian control shows).", "",
          "| site | polarity | source | single writer | single (cv) | coalition > 0.7 | coalition > 0.7 (cv) | mean coalition (cv) |",
          "|---|---|---|---|---|---|---|---|"]
    for site, row in e6.items():
        for pol, srcs in row.items():
            for src, s in srcs.items():
                L.append(f"| {site} | {pol} | {src} | {s['single_writer_fraction']:.2f} | "
                         f"{s['single_writer_fraction_cv']:.2f} | {s['coalition_above_threshold']:.2f} | "
                         f"{s['coalition_above_threshold_cv']:.2f} | {s['mean_coalition_agreement_cv']:.3f} |")
    pos = {src: [e6[site]["positive"][src] for site in e6] for src in ("model", "gaussian", "random_init")}
    mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)  # noqa: E731
    L += ["", "Averaged over layers (positive polarity): single-writer fraction in-sample "
          + ", ".join(f"{s} {mean(v, 'single_writer_fraction'):.2f}" for s, v in pos.items())
          + "; cross-validated " + ", ".join(f"{s} {mean(v, 'single_writer_fraction_cv'):.2f}"
                                              for s, v in pos.items())
          + "; held-out coalition vote agreement " + ", ".join(
              f"{s} {mean(v, 'mean_coalition_agreement_cv'):.3f}" for s, v in pos.items())
          + ". With 32-dim features and d_ff columns, a column above 0.7 and a top-N vote above "
          "0.7 arise by selection in any matrix; only the cross-validated numbers separate the "
          "model from its controls."]
    L += ["", f"![E6]({files['e6']})", "", "## E7 — sign flips", "",
          "Unit: next-token probability mass on the concept's tokens (anchors + held-out ids) at the "
          "last prompt token, intervened minus baseline, mean over the concept's prompts; flips at "
          "all positions, strength 1. Controls: `toward`; `random` (magnitude-matched dims, "
          "flipped away from their usual sign); `disjoint` (uniform dims outside the feature); "
          "`concept` (an unrelated concept's feature at the same layer).", "",
          f"![depth profile]({files['depth']})", ""]
    away = torch.tensor([e["delta_mass"]["away"] for e in e7["effects"]]).mean(0)
    L += ["Mean away Δ mass per layer: " + ", ".join(
        f"{s} {_f(float(v), 3)}" for s, v in zip(e7["sites"], away)) + ".", ""]
    for title, key in (("Per-concept best layer (chosen on the away effect itself)", "per_concept_best"),
                       (f"One common layer ({e7['common_site']}, best mean away effect)", "common_layer")):
        w = e7[key]
        L += [f"### {title}", "",
              f"**away lowers the mass more than every control on {w['n_beat_all_controls']} of "
              f"{w['n']} concepts** (by Δ log mass: {w['n_beat_all_controls_logp']} of {w['n']}).", "",
              "Per control, away is lower on: " + ", ".join(
                  f"{c} {k}/{w['n']}" for c, k in w["n_beat_each_control"].items()) + ".", "",
              "| concept | site | away | toward | random | disjoint | concept | beats all |",
              "|---|---|---|---|---|---|---|---|"]
        for row in w["rows"]:
            L.append(f"| {row['name']} | {row['site']} | {_f(row['away'])} | {_f(row['toward'])} | "
                     f"{_f(row['random'])} | {_f(row['disjoint'])} | {_f(row['concept'])} | "
                     f"{'yes' if all(row['beats'].values()) else 'no'} |")
        L.append("")
    diag = e7["control_diagnostics"]
    hit = [n for n, d in diag.items() if d["disjoint_massive_dims"]]
    hit_r = [n for n, d in diag.items() if d["random_massive_dims"]]
    rows = e7["common_layer"]["rows"]
    clean = [r for r in rows if r["name"] not in hit]
    L += ["### Why the disjoint control sometimes wins", "",
          f"At {e7['common_site']}, the disjoint draw (uniform over dims outside the feature) "
          f"contains a massive-activation dim (mean |x| over the prompts > 20x the site's median) "
          f"for {len(hit)} of {len(diag)} concepts: {', '.join(hit) or 'none'} (dims "
          f"{sorted({x for d in diag.values() for x in d['disjoint_massive_dims']})}). The "
          f"magnitude-matched random draws hit one for {len(hit_r)}, and the features' own dims "
          f"peak at {max(d['feature_max_ratio'] for d in diag.values()):.1f}x the median. Negating "
          "such a dim at every position breaks the model for every concept (see the random "
          "control, which matches magnitudes and stays small), so this is a property of the "
          "uniform control, not evidence against the feature. Excluding those draws, away beats "
          f"every control on {sum(all(r['beats'].values()) for r in clean)} of {len(clean)} "
          "concepts.", "",
          "| concept | max mean|x| / median: feature dims | random dims | disjoint dims | massive disjoint dims |",
          "|---|---|---|---|---|"]
    L += [f"| {n} | {d['feature_max_ratio']:.1f} | {d['random_max_ratio']:.1f} | "
          f"{d['disjoint_max_ratio']:.1f} | {d['disjoint_massive_dims']} |" for n, d in diag.items()]
    L.append("")
    base = {e["name"]: e["baseline_mass"] for e in e7["effects"]}
    L += ["Baseline masses: " + ", ".join(f"{n} {v:.3f}" for n, v in base.items()) + ".", "",
          f"### Specificity at {e7['common_site']}", "",
          f"Flip concept i (rows) away, measure concept j (columns) on its own prompts. A concept's "
          f"own flip lowers its log mass more than any other flip for "
          f"{e7['specificity']['diagonal_rank'] * 100:.0f}% of the concepts.", "",
          f"![specificity]({files['specificity']})", "",
          "Prompts (first concept): " + "; ".join(f"`{p}`" for p in e7["effects"][0]["prompts"]), ""]
    return "\n".join(L)
