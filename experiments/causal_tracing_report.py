"""The E5 (K/V survival, before and after RoPE) and E6 (FFN writers, top-32 and tau-rule features)
sections of the causal page, and their two plots, from ``causal.json``."""

from __future__ import annotations

from pathlib import Path

from experiments.report import pyplot, save_figure

__all__ = ["e5_e6_markdown", "e5_e6_plots"]

KINDS = (("resid", "resid"), ("k", "K before RoPE"), ("k_rot", "K after RoPE"), ("v", "V"))
SOURCES = (("model", "-"), ("gaussian", ":"), ("random_init", "--"))


def _rules(r: dict) -> list[tuple[str, dict]]:
    """(label, e6 result) for each feature rule the result holds."""
    return [("top-32", r["e6"])] + [(label, v["e6"]) for label, v in r.get("e6_rules", {}).items()]


def _counted(row: dict, has_null: bool) -> int:
    """Categories a site keeps: above its own null (older runs: held-out AUC >= 0.9)."""
    return row["above_null"] if has_null else row["discoverable"]["0.9"]


def e5_e6_plots(r: dict, out: Path, files: dict) -> None:
    plt = pyplot()
    e5 = r["e5"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    has_null = "above_null" in next(iter(e5["sites"].values()))
    for kind, label in KINDS:
        pts = [(L, e5["sites"][f"{kind}.{L}"]) for L in e5["layers"] if f"{kind}.{L}" in e5["sites"]]
        if not pts:
            continue
        axes[0].plot([p[0] for p in pts], [p[1]["mean_held_out_auc"] for p in pts], marker="o",
                     label=label)
        axes[1].plot([p[0] for p in pts], [_counted(p[1], has_null) for p in pts], marker="o",
                     label=label)
    if "embed" in e5["sites"]:
        emb = e5["sites"]["embed"]
        axes[0].axhline(emb["mean_held_out_auc"], color="gray", ls="--", label="embedding")
        axes[1].axhline(_counted(emb, has_null), color="gray", ls="--", label="embedding")
    axes[0].set_ylabel("mean held-out AUC")
    axes[1].set_ylabel("categories above the site's own null" if has_null else
                       "categories with held-out AUC ≥ 0.9")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.legend(fontsize=7)
    fig.tight_layout()
    files["e5"] = "causal_kv.png"
    save_figure(fig, out / files["e5"])

    rules = _rules(r)
    fig, axes = plt.subplots(1, len(rules), figsize=(5.5 * len(rules), 3.8), squeeze=False)
    for ax, (label, e6) in zip(axes[0], rules):
        for src, ls in SOURCES:
            for pol, c in (("positive", "C0"), ("both", "C1")):
                ys = [row[pol][src]["mean_coalition_agreement_cv"] for row in e6.values()]
                ax.plot([int(s.split(".")[1]) for s in e6], ys, ls=ls, color=c, marker="o", ms=3,
                        label=f"{src}, {pol}")
        ax.axhline(0.5, color="k", lw=0.5)
        ax.set_title(f"features: {label}", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylabel("coalition vote agreement (held-out dims)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    files["e6"] = "causal_ffn.png"
    save_figure(fig, out / files["e6"])


def _e5(r: dict, files: dict) -> list[str]:
    e5 = r["e5"]
    has_null = "above_null" in next(iter(e5["sites"].values()))
    L = ["## E5 — K/V survival", "",
         "Discovery rerun on the signs of each site; a category counts at a site when its "
         "prototype's held-out AUC beats the site's own references (random tokens and random "
         "listed-word pseudo-categories, both p < 0.05: *above null*), next to the fixed "
         "thresholds 0.75 and 0.9. `k.L` is the K projection (after the k-norm where the model "
         "has one), before the rotary embedding; `k_rot.L` the same keys after it, as attention "
         "uses them (the model's own `apply_rotary_pos_emb` on the cos/sin its attention modules "
         "received, each token after the start token, at position 1)." if has_null else
         "Keys are read before the rotary embedding (an older run).", ""]
    if "k_sign_agreement" in e5:
        ag = e5["k_sign_agreement"]
        L += [f"The pass that reads `k_rot.L` recomputes `k.L`: its sign bits equal the cache's on "
              f"{min(ag.values()):.4f}–{max(ag.values()):.4f} of entries (float rounding of a "
              "batched forward vs the cache's shared start-token keys).", ""]
    head = "| site | categories | above own null | median listed-word null | AUC ≥ 0.75 | ≥ 0.9 | mean held-out AUC | mean hard AUC |"
    L += [head, "|---|---|---|---|---|---|---|---|"]
    for site, row in e5["sites"].items():
        null = (f"{row['above_null']} | {row['median_null_listed_auc']:.3f}" if has_null else "– | –")
        L.append(f"| {site} | {row['n_categories']} | {null} | {row['discoverable']['0.75']} | "
                 f"{row['discoverable']['0.9']} | {row['mean_held_out_auc']:.3f} | "
                 f"{row['mean_hard_auc']:.3f} |")
    return L + ["", f"![E5]({files['e5']})", ""]


def _mean(e6: dict, pol: str, src: str, key: str) -> float:
    return sum(e6[s][pol][src][key] for s in e6) / len(e6)


def _e6(r: dict, files: dict) -> list[str]:
    rules = _rules(r)
    L = ["## E6 — FFN writers", "",
         "Columns of block L's down projection against the features at resid.L (threshold 0.7, "
         "coalition = top-N columns by agreement, majority vote). *cv*: columns chosen on a random "
         "half of the feature's dims, scored on the other half (the in-sample numbers are inflated "
         "by selection on any matrix, as the Gaussian control shows). Feature rules: the "
         "catalog's top-32 dims (the features E7 flips), and where run the paper's rule (every "
         "dim whose per-dim anchor AUC reaches τ; features with too few dims for the "
         "cross-validated halves left out) and top-k features of hundreds of dims, the size of "
         "the paper's features.", ""]
    extra = r.get("e6_rules", {})
    if extra:
        L += ["Dims per feature over all categories (min / median / max) and, in brackets, the "
              "features kept:", "", "| site | top-32 | " + " | ".join(extra) + " |",
              "|---|---|" + "---|" * len(extra)]
        for site, top in r.get("e6_dims", {}).items():
            cells = []
            for v in extra.values():
                kept = next(iter(v["e6"].get(site, {}).get("positive", {}).values()),
                            {}).get("n_features", 0)
                cells.append(f"{' / '.join(map(str, v['dims'][site]))} ({kept})")
            L.append(f"| {site} | {' / '.join(map(str, top))} | " + " | ".join(cells) + " |")
        L.append("")
    L += ["Mean over layers:", "",
          "| features | polarity | source | single writer | single (cv) | coalition > 0.7 | "
          "coalition > 0.7 (cv) | mean coalition (cv) |", "|---|---|---|---|---|---|---|---|"]
    keys = ("single_writer_fraction", "single_writer_fraction_cv", "coalition_above_threshold",
            "coalition_above_threshold_cv")
    for label, e6 in rules:
        if not e6:
            L.append(f"| {label} | – | – | no layer has a feature left | | | | |")
            continue
        for pol in ("positive", "both"):
            for src, _ in SOURCES:
                cells = " | ".join(f"{_mean(e6, pol, src, k):.2f}" for k in keys)
                L.append(f"| {label} | {pol} | {src} | {cells} | "
                         f"{_mean(e6, pol, src, 'mean_coalition_agreement_cv'):.3f} |")
    L += ["", "Per layer (positive polarity):", "",
          "| features | site | source | single writer | single (cv) | coalition > 0.7 | "
          "coalition > 0.7 (cv) | mean coalition (cv) |", "|---|---|---|---|---|---|---|---|"]
    for label, e6 in rules:
        for site, row in e6.items():
            for src, s in row["positive"].items():
                L.append(f"| {label} | {site} | {src} | {s['single_writer_fraction']:.2f} | "
                         f"{s['single_writer_fraction_cv']:.2f} | {s['coalition_above_threshold']:.2f} | "
                         f"{s['coalition_above_threshold_cv']:.2f} | {s['mean_coalition_agreement_cv']:.3f} |")
    return L + ["", f"![E6]({files['e6']})", ""]


def e5_e6_markdown(r: dict, files: dict) -> list[str]:
    return _e5(r, files) + _e6(r, files)
