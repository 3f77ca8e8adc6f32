"""The reading page as written before E3 chose its layer by nested cross-validation and set
nulls beside it: kept only so that pages written then still regenerate from their
``reading.json`` (:func:`experiments.reading_report.markdown` dispatches here for them)."""

from __future__ import annotations

from experiments.report import fmt

__all__ = ["markdown"]

PAPER = {
    "e1": "top-5 72–93% (4B–7B), 59.5% (32B); top-1 37–62%",
    "e2": "top-4096: 80–90%",
    "e3": "mean per-dim AUC ~0.80; prototype AUC 0.975–0.993; 137–175 of 175 discoverable",
    "e8": "1500 features, 100% yield, 99% sparsity",
    "e9": "mean MI 0.0004–0.0051 bits; none above 0.1",
}


def _layers(res):
    return [s for s in res["sites"]]


def markdown(res: dict) -> str:
    sites = _layers(res)
    e1, e2, e3, e9 = res["e1"], res["e2"], res["e3"], res["e9"]
    emb = res["e3_embedding"]
    best = max(sites, key=lambda s: e3[s]["held_out_auc"]["median"])
    picked = max(sites, key=lambda s: e3[s]["mean_dim_auc"])  # the catalog's rule, anchors only
    pick = res.get("e3_catalog_pick")
    cfg = res["categories"]["config"]
    inp = res.get("cache_input") or {}
    read = ("" if not inp else
            f", each vocabulary token read after `{inp['bos_token']}` (rule `{inp.get('bos_rule')}`, "
            "see bagofdims.inputs), texts after it too" if inp.get("bos")
            else ", each vocabulary token read alone")
    lines = [
        f"# Reading experiments on {res['model']}",
        "",
        f"Regenerate: `{res['command']}` "
        f"({res['seconds']:.0f} s on the machine that wrote this). Vocabulary {res['vocab']:,} "
        f"tokens, width {res['width']}, {res['n_positions']} text positions (packaged Wikipedia "
        f"leads), {res['categories']['used']} categories usable "
        f"({res['categories']['skipped']} skipped: too few single word-initial tokens)"
        f"{read}. Discovery: `{cfg['method']}` with k = {cfg['k']} dims per feature.",
        "",
        "## Summary",
        "",
        f"- **Best layer for categories: {best}**: median held-out prototype AUC "
        f"{fmt(e3[best]['held_out_auc']['median'])} vs the whole vocabulary, "
        f"{fmt(e3[best]['hard_auc']['median'])} vs other categories' members; "
        f"{e3[best]['discoverable']} of {e3[best]['n_categories']} categories reach 0.9. "
        f"Paper: {PAPER['e3']}.",
        f"- **Layer picked without held-out members** (highest mean per-dim AUC on the anchors): "
        f"{picked}, held-out median {fmt(e3[picked]['held_out_auc']['median'])} "
        f"(hard {fmt(e3[picked]['hard_auc']['median'])}).",
        *([f"- **Each category at its own site** (`cat[name]`: the same anchors-only rule per "
           f"category): held-out median {fmt(pick['held_out_auc']['median'])} (hard "
           f"{fmt(pick['hard_auc']['median'])}); sites used: "
           + ", ".join(f"{k} ×{v}" for k, v in list(pick["sites"].items())[:6])
           + (f" and {len(pick['sites']) - 6} more" if len(pick["sites"]) > 6 else "") + "."]
          if pick else []),
        f"- **Embedding baseline**: the signs of the embedding matrix alone give "
        f"{fmt(emb['held_out_auc']['median'])} (hard {fmt(emb['hard_auc']['median'])}), "
        f"{emb['discoverable']} discoverable.",
        f"- **E1** at `final`: sign-only head puts the model's own top-1 in its top-5 "
        f"{fmt(e1['final']['all']['top5_own'])} of the time (top-1 {fmt(e1['final']['all']['top1_own'])}); "
        f"scaled by mean |h|: {fmt(e1['final']['scaled']['top5_own'])} "
        f"(cross-fitted {fmt(e1['final']['scaled_heldout']['top5_own'])}). Paper: {PAPER['e1']}.",
        f"- **E2** at `final`: own next token in the Hamming top-4096 of the cached patterns "
        f"{fmt(e2['final']['cache'].get('own_top4096'))}, of the unembedding signs "
        f"{fmt(e2['final'].get('unembed', {}).get('own_top4096'))} "
        f"(chance {fmt(e2['final']['cache'].get('chance_top4096'))}). Paper: {PAPER['e2']}.",
        f"- **E9** mean sign MI {fmt(e9['final']['mean_mi'], 4)} bits (max {fmt(e9['final']['max_mi'], 3)}) "
        f"vs a randomly rotated copy {fmt(e9['final']['mean_mi_rotated'], 4)} "
        f"(max {fmt(e9['final']['max_mi_rotated'], 3)}). Paper: {PAPER['e9']}.",
        "",
        "![per layer](reading_layers.png)",
        "",
        "![AUC histogram and MI](reading_auc_mi.png)",
        "",
        "## E3 per layer (categories; held-out members only, never the anchors)",
        "",
        "| site | held-out AUC vs vocab (median) | vs other categories | null (random anchors) "
        "| embedding signs | discoverable (≥0.9) | mean per-dim AUC | dims with AUC ≥ 0.75 (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sites:
        r = e3[s]
        lines.append(
            f"| {s} | {fmt(r['held_out_auc']['median'])} | {fmt(r['hard_auc']['median'])} | "
            f"{fmt(r['null_held_out_auc']['median'])} | {fmt(emb['held_out_auc']['median'])} | "
            f"{r['discoverable']}/{r['n_categories']} | {fmt(r['mean_dim_auc'])} | "
            f"{fmt(r['tau_dims_mean'], 1)} |")
    lines += ["", "## E1 sign-only LM head per layer (logit lens: residual → final norm → signs)", "",
              "| site | all: top-1 own | all: top-5 own | scaled: top-5 own | scaled (cross-fit) "
              "| model top-1 true | all: top-5 true |", "|---|---|---|---|---|---|---|"]
    for s in sites:
        r = e1[s]
        lines.append(f"| {s} | {fmt(r['all']['top1_own'])} | {fmt(r['all']['top5_own'])} | "
                     f"{fmt(r['scaled']['top5_own'])} | {fmt(r['scaled_heldout']['top5_own'])} | "
                     f"{fmt(r['model']['top1_true'])} | {fmt(r['all']['top5_true'])} |")
    fr = res["e1_final_fracs"]
    lines += ["", "E1b at `final`, only the top-|h| dims' signs (rest zero): " + ", ".join(
        f"{k.replace('top_', 'top ')}: top-5 own {fmt(v['top5_own'])}" for k, v in fr.items()
        if k.startswith("top_")) + ".", "",
        "## E2 decoder-free Hamming readout per layer (own next token in top-k)", "",
        "| site | cache top-1 | cache top-100 | cache top-4096 | unembed top-100 | unembed top-4096 "
        "| current token in cache top-1 |", "|---|---|---|---|---|---|---|"]
    for s in sites:
        c, u = e2[s]["cache"], e2[s].get("unembed", {})
        lines.append(f"| {s} | {fmt(c.get('own_top1'))} | {fmt(c.get('own_top100'))} | "
                     f"{fmt(c.get('own_top4096'))} | {fmt(u.get('own_top100'))} | "
                     f"{fmt(u.get('own_top4096'))} | {fmt(c.get('cur_top1'))} |")
    lines += ["", "## E8 unsupervised discovery (seed → 50 Hamming neighbours → per-dim AUC ≥ 0.75)", "",
              "| site | seeds | yield | dims per feature (mean / median) | sparsity | examples |",
              "|---|---|---|---|---|---|"]
    for s, r in res["e8"].items():
        lines.append(f"| {s} | {r['n_seeds']} | {fmt(r['yield'])} | {fmt(r['dims_mean'], 1)} / "
                     f"{fmt(r['dims_median'], 0)} | {fmt(r['sparsity'])} | "
                     f"{', '.join(r['examples'][:5])} |")
    lines += ["", "## E9 pairwise sign mutual information per layer", "",
              "| site | mean MI | max MI | rotated: mean | rotated: max |", "|---|---|---|---|---|"]
    for s in sites:
        r = e9[s]
        lines.append(f"| {s} | {fmt(r['mean_mi'], 4)} | {fmt(r['max_mi'], 3)} | "
                     f"{fmt(r['mean_mi_rotated'], 4)} | {fmt(r['max_mi_rotated'], 3)} |")
    lines += ["", "## Notes", "",
              "- Held-out AUC: category members not used as anchors, scored against every other "
              "vocabulary token (anchors excluded) and against the members of the other "
              "categories (hard negatives). The null builds prototypes from random 50-token "
              "sets and scores random held-out tokens.",
              "- 'Discoverable' is our threshold (held-out AUC ≥ 0.9); the paper does not define it.",
              "- A 50/50 sign dim caps a per-dim sign AUC at 0.75, so the paper's τ = 0.75 keeps "
              "only dims whose vocabulary rate is skewed; the default here keeps the top-k dims.",
              "- `final` has the same signs as the last `resid` site when the final norm's "
              "weights are all positive."]
    return "\n".join(lines) + "\n"
