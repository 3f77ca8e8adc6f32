"""The causal report's plots and markdown page (``causal.md``), from the result
:mod:`experiments.causal` writes as ``causal.json``. The page opens with a verdict table; the
rules that turn numbers into verdicts are :mod:`experiments.causal_verdicts`."""

from __future__ import annotations

from pathlib import Path

import torch

from bagofdims.errors import InvalidArgument
from experiments.causal_tracing_report import e5_e6_markdown, e5_e6_plots
from experiments.causal_verdicts import verdicts
from experiments.report import fmt, pyplot, save_figure, verdict_row

__all__ = ["markdown", "plots"]


def _e7_plots(r: dict, out: Path, files: dict) -> None:
    plt = pyplot()
    e7 = r["e7"]
    fig, ax = plt.subplots(figsize=(11, 4))
    for i, d in enumerate(e7["distributions"]):
        for j, (kind, c) in enumerate((("stratified", "C1"), ("disjoint", "C2"))):
            ys = d["controls"][kind]
            ax.scatter([i + (j - 0.5) * 0.3] * len(ys), ys, s=6, color=c, alpha=0.5,
                       label=kind if i == 0 else None)
        ax.scatter([i], [d["effects"]["away"]], marker="D", color="C0", s=40,
                   label="away" if i == 0 else None, zorder=3)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(e7["names"])), [f"{n}\n{e7['chosen'][n]}" for n in e7["names"]],
                  fontsize=7, rotation=45)
    ax.set_ylabel("Δ mass on the concept's tokens")
    ax.set_title(f"{r['model']}: away flip vs {e7['settings']['n_draws']} draws of each control "
                 "(evaluation prompts, layer chosen on selection prompts)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["controls"] = "causal_controls.png"
    save_figure(fig, out / files["controls"])

    fig, ax = plt.subplots(figsize=(7, 4))
    layers = [int(s.split(".")[1]) for s in e7["sites"]]
    for key, label, style in (("away", "away", "o-"), ("control_median", "stratified control "
                                                       "(median)", "s--"),
                              ("excess", "away − control", "^-")):
        vals = torch.tensor([[e7["depth"][n][s][key] for s in e7["sites"]] for n in e7["names"]])
        ax.plot(layers, vals.mean(0).tolist(), style, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("layer of the flipped resid site")
    ax.set_ylabel("Δ mass, mean over concepts")
    ax.set_title("depth profile (evaluation prompts)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files["depth"] = "causal_depth.png"
    save_figure(fig, out / files["depth"])

    spec = e7["specificity"]
    m = torch.tensor(spec["delta_logp"])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lim = float(m.abs().max()) or 1.0
    im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    names = spec["names"]
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_yticks(range(len(names)), [f"{n} @{s}" for n, s in zip(names, spec["sites"])], fontsize=7)
    ax.set_xlabel("concept measured")
    ax.set_ylabel("concept flipped (away), at its chosen layer")
    fig.colorbar(im, label="Δ log mass")
    fig.tight_layout()
    files["specificity"] = "causal_specificity.png"
    save_figure(fig, out / files["specificity"])


def plots(r: dict, out: Path) -> dict[str, str]:
    """Control distributions, depth profile, specificity heatmap, E5 and E6 plots; returns
    name -> file name."""
    files: dict[str, str] = {}
    _e7_plots(r, out, files)
    e5_e6_plots(r, out, files)
    return files


def _f(x, digits: int = 4) -> str:
    return fmt(x, digits, sign=True)


def _e7(r: dict, files: dict) -> list[str]:
    e7, st = r["e7"], r["e7"]["settings"]
    sm = e7["summary"]
    L = ["## E7 — sign flips", "",
         f"Unit: next-token probability mass on the concept's tokens (anchors + held-out ids) at the "
         f"last prompt token, flipped minus unflipped, mean over the concept's prompts; flips at all "
         f"positions, strength 1. Protocol, fixed before any effect was seen: per concept "
         f"{st['n_select']} selection prompts choose the layer (the grid layer whose `away` flip "
         f"lowers the mass most on them); {st['n_eval']} other prompts measure every number below. "
         f"At the chosen layer: {st['n_draws']} magnitude-stratified draws (each feature dim "
         f"replaced by an outside dim from the same of {st['strata']} equal-count bins of mean |x|) "
         f"and {st['n_draws']} disjoint uniform draws, each flipped away from its usual sign; "
         f"`toward`; `single` (the feature's best dim alone); `concept` (an unrelated concept's "
         f"feature). p = (1 + draws with a drop at least as large as away's) / (1 + "
         f"{st['n_draws']}). No draw or concept is excluded; draws that contain a "
         f"massive-activation dim (mean |x| > {st['massive_ratio']:g}× the site's median) are "
         f"counted: {sm['stratified']['massive_draws']} stratified and "
         f"{sm['disjoint']['massive_draws']} disjoint draws in all.", "",
         f"![controls]({files['controls']})", "",
         "| concept | layer | base mass | away | toward | single | concept | stratified median "
         "[5%, 95%] | p | disjoint median [5%, 95%] | p | p (Δ log mass): strat / disj |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in e7["distributions"]:
        q = {k: torch.quantile(torch.tensor(d["controls"][k], dtype=torch.float64),
                               torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)).tolist()
             for k in ("stratified", "disjoint")}
        ef = d["effects"]
        L.append(f"| {d['name']} | {d['site']} | {d['baseline_mass']:.3f} | {_f(ef['away'])} | "
                 f"{_f(ef['toward'])} | {_f(ef['single'])} | {_f(ef['concept'])} | "
                 f"{_f(q['stratified'][1])} [{_f(q['stratified'][0])}, {_f(q['stratified'][2])}] | "
                 f"{d['p']['stratified']:.3f} | {_f(q['disjoint'][1])} [{_f(q['disjoint'][0])}, "
                 f"{_f(q['disjoint'][2])}] | {d['p']['disjoint']:.3f} | "
                 f"{d['p_logp']['stratified']:.3f} / {d['p_logp']['disjoint']:.3f} |")
    for kind in ("stratified", "disjoint"):
        k = sm[kind]
        L += ["", f"**Against {kind} draws**: p < {st['alpha']} for {k['n_significant']} of "
              f"{k['n']} concepts (by Δ log mass: {k['n_significant_logp']}); by chance "
              f"{k['expected_by_chance']:.1f} expected (P(≥ {k['n_significant']}) = "
              f"{k['p_count']:.2g}); median p {k['median_p']:.3f}; on average "
              f"{100 * k['share_as_strong']:.0f}% of a concept's draws lower the mass as much as "
              f"away does."]
    sat = [d for d in e7["distributions"] if d["effects"]["away"] <= -0.9 * d["baseline_mass"]]
    tied = sum(any(c <= d["effects"]["away"] for k in ("stratified", "disjoint")
                   for c in d["controls"][k]) for d in sat)
    L += ["", f"**Floor.** Away removes at least 90% of the baseline mass for {len(sat)} of "
          f"{len(e7['distributions'])} concepts; for {tied} of them some control draw does too, "
          "and each such draw counts against away (a floor on its p-value). The Δ log mass "
          "p-values (last column) are not capped at the floor."]
    ds = e7["depth_summary"]
    L += ["", "### Depth profile", "",
          f"`away` and {st['depth_draws']} stratified draws at every layer of the grid, on the "
          f"evaluation prompts. Excess of away over the control median, mean over concepts: first "
          f"third ({', '.join(ds['early']['sites'])}) {_f(ds['early']['mean'])} "
          f"[{_f(ds['early']['lo'])}, {_f(ds['early']['hi'])}], last third "
          f"({', '.join(ds['late']['sites'])}) {_f(ds['late']['mean'])} [{_f(ds['late']['lo'])}, "
          f"{_f(ds['late']['hi'])}] (95% bootstrap over concepts).", "",
          f"![depth]({files['depth']})", "",
          "| concept | " + " | ".join(e7["sites"]) + " |", "|---|" + "---|" * len(e7["sites"])]
    for n in e7["names"]:
        L.append(f"| {n} | " + " | ".join(
            f"{_f(e7['depth'][n][s]['excess'], 3)}" for s in e7["sites"]) + " |")
    L += ["", "Rows: away minus the stratified-control median per layer. Selection-prompt "
          "away effects per layer (what chose each layer) are in `causal.json` (`e7.selection`); "
          f"the layer with the lowest mean over concepts there is {e7['common_site']}.", ""]
    sp = e7["specificity"]["stats"]
    L += ["### Specificity", "",
          f"Each concept's feature flipped away at its chosen layer (rows), every concept's mass "
          f"measured on its own evaluation prompts (columns). A concept's own flip lowers its log "
          f"mass more than any other flip for {sp['own_best']} of {sp['n']} concepts "
          f"({100 * sp['rate']:.0f}%, 95% Wilson [{100 * sp['rate_lo']:.0f}%, "
          f"{100 * sp['rate_hi']:.0f}%]); chance {100 * sp['chance']:.0f}% (P(≥ {sp['own_best']} "
          f"by chance) = {sp['p_chance']:.2g}). Own change minus the median of the other flips' "
          f"changes: median {_f(sp['margin'], 3)} [{_f(sp['margin_lo'], 3)}, "
          f"{_f(sp['margin_hi'], 3)}] (bootstrap over concepts; negative = the own flip hits "
          "harder).", "", f"![specificity]({files['specificity']})", "",
          "Prompts (first concept), selection: " + "; ".join(
              f"`{p}`" for p in e7["prompts"][e7["names"][0]]["select"]) + "; evaluation: " +
          "; ".join(f"`{p}`" for p in e7["prompts"][e7["names"][0]]["eval"]), ""]
    return L


def markdown(r: dict, files: dict) -> str:
    if "distributions" not in r["e7"]:  # written before control distributions and verdicts
        raise InvalidArgument("this causal.json was written by an earlier version of the report "
                              "(no control distributions); rerun scripts/reproduce_causal.py.")
    layers = r["layers"]
    L = [f"# Causal tests on {r['model']}: K/V survival, FFN writers, sign flips", "",
         f"Command: `{r['command']}` ({r['seconds']} s, {r['threads']} CPU thread). Sign cache: "
         f"{r['n_cached_tokens']} tokens ({'whole vocabulary' if r['full_vocab'] else 'subset'}). "
         f"Layers: step {layers[1] - layers[0] if len(layers) > 1 else 1} of {r['n_layers']} "
         f"({layers}). Features: top-32 dims by per-dim AUC from 50 anchors (catalog default)."
         + (f" E5 and E6 come from this command; E7 was kept from an earlier run of "
            f"`{r['e7_from']['command']}` ({r['e7_from']['seconds']} s) with the same model, "
            "seed, cache rule and layers." if "e7_from" in r else ""),
         "", "## Verdicts", "",
         "| paper claim | our number (95% CI) | verdict | why |", "|---|---|---|---|"]
    L += [verdict_row(v) for v in verdicts(r)]
    L += ["", "Rules: see `experiments/causal_verdicts.py`. No row picks a layer on its outcome: "
          "E7's layers are chosen on separate prompts, E5/E6 rows give the range over every "
          "layer run.", ""]
    return "\n".join(L + e5_e6_markdown(r, files) + _e7(r, files))
