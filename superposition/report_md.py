"""Markdown rendering of an analysis' metrics (report.md)."""
from __future__ import annotations

from pathlib import Path

from bagofdims.storage import atomic_file


def _f(x, nd=3):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def write_report(m: dict, figs: list[str], out: Path) -> None:
    """report.md of one analyzed run."""
    text = "\n".join([f"# BOWS analysis: `{m['run']['path']}`", ""] + render_analysis({**m, "figures": figs}))
    with atomic_file(out / "report.md", "w") as f:
        f.write(text + "\n")


def render_analysis(m: dict, level: int = 2) -> list[str]:
    """Markdown lines of an analysis' metrics; sections start at heading ``level``."""
    tr = (m["run"].get("train") or {})
    c = m["run"]["config"]
    mo, rc, cat, sp = m["months"], m["reconstruction"], m["categories"], m["spectrum"]
    L = [f"V = {c['vocab_size']}, m = {c['latent']}, weight decay {c['weight_decay']}, lr {c['lr']}, "
         f"{tr.get('steps', c.get('total_steps'))} steps, batch {c['batch_size']}, "
         f"{'ReLU' if c.get('relu', True) else 'linear'}; **lr x wd x steps = {_f(tr.get('lr_x_wd_x_steps'), 2)}** "
         "(the reference full run has 5e-4 x 4 x 31.7k = 63; decay strength scales with this product, "
         "so nominal wd values of runs of different length are not comparable).",
         f"Validation MSE {_f(tr.get('val_loss'), 5)}; training took {_f(tr.get('seconds'), 0)} s.", "",
         "## Months", "",
         f"| ring-order score | data | weights | chance |\n|---|---|---|---|\n| fraction of cyclic neighbours adjacent on the PCA ring "
         f"| {_f(mo['ring_order_data'], 2)} | {_f(mo['ring_order_weights'], 2)} | {_f(mo['ring_order_chance'], 2)} |", "",
         f"PCA variance explained (2 components): data {', '.join(_f(v, 2) for v in mo['pca_var_data'])}; "
         f"weights {', '.join(_f(v, 2) for v in mo['pca_var_weights'])}.", "",
         "Seasonal words projected into the weights' month plane, nearest month by angle: " +
         ", ".join(f"{w} -> {mn}" for w, mn in mo["seasonal_nearest_month"].items()) + ".", "",
         "## Reconstruction and superposition (held-out windows)", "",
         f"Over the {rc['words']} most frequent words: median R² in context {_f(rc['model_r2_median'])}, alone (one-hot) "
         f"{_f(rc['alone_r2_median'])}, ridge linear decoder on h {_f(rc['linear_r2_median'])}. "
         f"At R² > {rc['threshold']}: {rc['linearly_superposed']} words linearly superposed, "
         f"{rc['nonlinearly_superposed']} only non-linearly. Months, linear decoder mean R²: {_f(rc['months_linear_r2_mean'])}.", "",
         "### Constructive interference (words whose one-hot pre-activation is <= 0)", "",
         "| word | alone pre-act | R² in context | contexts | P(pre>0 \\| present) | P(pre>0 \\| absent) | bias | self | interference (present) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for w, r in m["constructive_interference"].items():
        L.append(f"| {w} | {_f(r['alone_preactivation'])} | {_f(r['r2_in_context'])} | {r['contexts']} | "
                 f"{_f(r['frac_positive_when_present'], 2)} | {_f(r['frac_positive_when_absent'], 2)} | {_f(r['mean_bias'])} | "
                 f"{_f(r['mean_self'])} | {_f(r['mean_interference_present'])} |")
    if not m["constructive_interference"]:
        L.append("| (no frequent word has a non-positive one-hot pre-activation) |||||||||")
    tg = m.get("interference_targets", [])
    if tg:
        L += ["", "### Constructive interference across the runs compared", "",
              "Per run: frequent words (top by frequency) whose one-hot pre-activation |w|² + b is <= 0, the mean "
              "fraction of held-out windows containing such a word where its pre-activation is still > 0 "
              "(present) vs not containing it (absent), and the same for pre-declared targets (the capitalised "
              f"frequent words with the strongest co-occurrence partner, chosen from the data alone: {', '.join(tg)}), "
              "as alone pre-act / P(pre>0 | present) / P(pre>0 | absent).", "",
              "| run | words alone <= 0 | P(on \\| present) | P(on \\| absent) | " + " | ".join(tg) + " |",
              "|---|---|---|---|" + "---|" * len(tg)]
        for r in m["sweep"]:
            ci = r["constructive_interference"]
            cells = [f"{_f(t['alone_preactivation'])} / {_f(t['frac_positive_when_present'], 2)} / "
                     f"{_f(t['frac_positive_when_absent'], 2)}" for t in ci["targets"].values()]
            L.append(f"| {Path(r['run']).name} | {ci['alone_nonpositive']} of {ci['frequent_words']} | "
                     f"{_f(ci.get('mean_frac_positive_when_present'), 2)} | {_f(ci.get('mean_frac_positive_when_absent'), 2)} | "
                     + " | ".join(cells) + " |")
    L += ["", "## Geometry vs data statistics", "",
          f"Spearman between cos(w_i, w_j) and co-occurrence over the top words: phi {_f(m['spearman_cos_phi'])}, "
          f"PMI {_f(m['spearman_cos_pmi'])}.", "",
          f"Semantic categories ({cat['n_categories']} categories, {cat['n_words']} words): kNN purity (k=5) "
          f"{_f(cat['knn_purity'])} (shuffled labels {_f(cat['knn_purity_shuffled'])}), silhouette {_f(cat['silhouette'])} "
          f"(shuffled {_f(cat['silhouette_shuffled'])}).", "",
          f"‖W‖²_F = {_f(sp['weight_norm_sq'], 1)}, effective rank {_f(sp['effective_rank'], 1)} of {c['latent']}.", "",
          "## Runs compared (interference within groups, sign structure of h = W x)", "",
          "| run | m | wd | ‖W‖²_F | eff. rank | months interf. | roman interf. | Hamming recall@10 (chance) | sign MI mean (rotated) | P(h>0) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in m["sweep"]:
        gi, br = r["group_interference"], r.get("bridge", {})
        ham, mi = br.get("hamming", {}), br.get("sign_mi", {})
        L.append(f"| {Path(r['run']).name} | {r['latent']} | {r['weight_decay']} | {_f(r['weight_norm_sq'], 1)} | "
                 f"{_f(r['effective_rank'], 1)} | {_f(gi.get('months'))} | {_f(gi.get('roman'))} | "
                 f"{_f(ham.get('recall_at_k'))} ({_f(ham.get('chance'))}) | "
                 f"{_f(mi.get('mean_mi'), 4)} ({_f(mi.get('mean_mi_rotated'), 4)}) | {_f(mi.get('positive_fraction'), 2)} |")
        if "error" in br:
            L.append(f"\nBridge not run: {br['error']}\n")
    L += ["", "## Figures", ""] + [f"![{f}]({f})" for f in m.get("figures", [])]
    shift = "#" * (level - 2)
    return [shift + ln if ln.startswith("##") else ln for ln in L]
