"""Markdown of the mechanism analyses (the section a BOWS report embeds)."""
from __future__ import annotations


def _f(x, nd=3) -> str:
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _interference(ci: dict) -> list[str]:
    L = ["### Constructive interference", "",
         f"Of the {ci['words']} most frequent words, {ci['with_min_contexts']} occur in >= {ci['min_contexts']} "
         f"held-out windows; **{ci['alone_nonpositive']}** of those have a one-hot pre-activation "
         f"|w_i|² + b_i <= 0 (off alone), and **{ci['switched_on']}** of those are on (pre-activation > 0) in more "
         f"than {ci['majority']:.0%} of the held-out windows that contain them: switched on by context. Mean on-rate "
         f"of the off-alone words in their contexts {_f(ci['mean_on_present_of_alone_nonpositive'], 2)}, in windows "
         f"without them {_f(ci['mean_on_absent_of_alone_nonpositive'], 3)}.", ""]
    if ci["switched_on_words"]:
        L += ["| word | alone pre-act | held-out contexts | P(on \\| present) | P(on \\| absent) |", "|---|---|---|---|---|"]
        for w, r in list(ci["switched_on_words"].items())[:12]:
            L.append(f"| {w} | {_f(r['alone_preactivation'])} | {r['contexts']} | {_f(r['on_present'], 2)} | {_f(r['on_absent'], 3)} |")
        L.append("")
    for d in ci["details"]:
        parts = ", ".join(f"{p['word']} {p['mean_contribution']:.3f}" for p in d["partners"][:6])
        L.append(f"- **{d['word']}** (shown: {ci['target_rule']}): bias {_f(d['bias'])} + self {_f(d['self'])} "
                 f"+ mean interference {_f(d['mean_interference_present'])} in its {d['contexts']} contexts; "
                 f"partners (mean (w_i·w_j) P(j|i)): {parts}; its top partners together without it: "
                 f"pre-activation {_f(d['top_partners_without_word'])}.")
    return L + ["", f"![constructive interference]({ci['figure']})", ""]


def _values(v: dict) -> list[str]:
    L = ["### Value coding", "",
         "Ridge regression from a word's latent (its column of W) to an ordered quantity, nested "
         "5-fold CV (ridge strength chosen on each outer training fold by an inner 4-fold CV), "
         "R² of the pooled out-of-fold predictions; null: the same with the values shuffled across "
         f"words. Sources: {v['source']}.", "",
         "| words | target | n | held-out R² | null mean | null 95% | p |", "|---|---|---|---|---|---|---|"]
    for name in ("places", "numbers"):
        r = v.get(name, {})
        if "skipped" in r:
            L.append(f"| {name} | (skipped: {r['skipped']}) ||||||")
            continue
        for t in r.get("targets", []):
            s = r[t]
            L.append(f"| {name} | {t} | {r['n_words']} | {_f(s['r2'])} | {_f(s['null_mean'])} | "
                     f"{_f(s['null_q95'])} | {_f(s['p'])} |")
    return L + ["", f"![value coding]({v['figure']})", ""]


def _antipodal(a: dict) -> list[str]:
    p, w = a["planted"], a["words"]
    L = ["### Antipodal pairs", "",
         f"Synthetic: {p['features']} features in mutually exclusive pairs (a pair active with probability "
         f"{p['p_active']}, then one member), m = {p['latent']}, ReLU, {p['steps']} steps.", "",
         "| wd | loss | planted pairs: mean cos | frac < -0.9 | other pairs: mean cos | frac < -0.9 |",
         "|---|---|---|---|---|---|"]
    for r in p["runs"]:
        L.append(f"| {r['weight_decay']:g} | {_f(r['loss'], 5)} | {_f(r['planted']['mean_cos'])} | "
                 f"{_f(r['planted']['frac_below_-0.9'], 2)} | {_f(r['other_pairs']['mean_cos'])} | "
                 f"{_f(r['other_pairs']['frac_below_-0.9'], 2)} |")
    n, c = w["never"], w["control"]
    L += ["", f"Trained run, {w['words']} most frequent words: {n['n']} pairs never share a training window "
          f"although independence predicts >= {w['min_expected']:g}; their mean cos {_f(n['mean_cos'])} "
          f"(fraction < -0.5: {_f(n['frac_below_-0.5'], 3)}) vs {_f(c['mean_cos'])} ({_f(c['frac_below_-0.5'], 3)}) "
          f"for the {c['n']} pairs with the same expectation that do co-occur. Most antipodal: "
          + ", ".join(f"{a_} / {b_} {x:.2f}" for a_, b_, x in w["most_antipodal"][:5]) + ".", "",
          f"![antipodal pairs]({a['figure']})", ""]
    return L


def _shapes(s: dict) -> list[str]:
    c = s["config"]
    L = ["### Figure-8 and sphere", "",
         f"{c['features']} features at known points of each shape fire when a random point of the shape "
         f"is near them (width {c['width']}); ReLU tied autoencoders with m = {c['latent']}, {c['steps']} steps. "
         "Recovery of the true geometry from the unit feature directions, each with its shuffled "
         "control (true points permuted across features; mean / 95th percentile):", "",
         "| shape | wd | lr·wd·steps | eff. rank | Spearman(learned, true distance) | kNN overlap (k=4) | Procrustes fit |",
         "|---|---|---|---|---|---|---|"]
    for r in s["runs"]:
        cells = [f"{_f(r[k]['value'])} ({_f(r[k]['shuffled_mean'])} / {_f(r[k]['shuffled_q95'])})"
                 for k in ("spearman", "knn", "procrustes")]
        L.append(f"| {r['structure']} | {r['weight_decay']:g} | {_f(r['lr_x_wd_x_steps'], 1)} | "
                 f"{_f(r['effective_rank'], 1)} | " + " | ".join(cells) + " |")
    return L + ["", f"![shapes]({s['figure']})", ""]


def _bridge(b: dict) -> list[str]:
    L = ["### Bridge: bagofdims sign features on the toy latents", "",
         f"Each word's hidden state is its column W e_i ({b['dims']} dims); bagofdims categories with >= "
         f"{b['n_anchors']} + {b['min_held_out']} words in the vocabulary: {b['usable']} of {b['categories_total']}. "
         f"Top-{b['k']} dims by sign AUC on {b['n_anchors']} anchors; held-out AUC of the prototype.", ""]
    if "trained" not in b:
        return L + [b.get("note", ""), ""]
    t, r, lm = b["trained"], b["random_init"], b.get("lm")
    L += ["| latents | held-out AUC (median) | vs other categories | discoverable (>= 0.9) | random-anchor null |",
          "|---|---|---|---|---|",
          f"| toy, trained | {_f(t['held_out_auc_median'])} | {_f(t['hard_auc_median'])} | {t['discoverable']}/{b['usable']} | {_f(t['null_held_out_auc_median'])} |",
          f"| toy, random init | {_f(r['held_out_auc_median'])} | {_f(r['hard_auc_median'])} | {r['discoverable']}/{b['usable']} | {_f(r['null_held_out_auc_median'])} |"]
    if lm:
        L.append(f"| {lm['model']} {lm['picked_site']} (picked from anchors) | {_f(lm['picked_held_out_auc_median'])} | "
                 f"{_f(lm['picked_hard_auc_median'])} | {lm['picked_discoverable']}/{lm['n_categories']} | {_f(lm['picked_null_median'])} |")
        L += ["", f"Language-model numbers read from `{lm['report']}` (width {lm['width']}, top-{lm['k']} dims; its "
              f"best site by held-out median is {lm['best_site']} at {_f(lm['best_held_out_auc_median'])}, its "
              f"embedding signs give {_f(lm['embedding_held_out_auc_median'])}). Its categories have more anchors and "
              f"come from a vocabulary of {lm['vocab']} tokens, so the two rows compare the method's reach, not equal tasks."]
        common = b.get("common_categories") or {}
        if common:
            L += ["", "Categories usable in both: " + ", ".join(
                f"{c} {v['toy']:.2f} vs {v['lm']:.2f}" for c, v in common.items()) + " (toy vs language model)."]
    return L + [""]


def markdown_section(metrics: dict) -> str:
    """The mechanisms section of a BOWS report from :func:`analyze_mechanisms`' metrics."""
    L = ["## Mechanisms", "",
         f"Run `{metrics['run']}` (V = {metrics['vocab_size']}, m = {metrics['latent']}, wd {metrics['weight_decay']}).", ""]
    L += _interference(metrics["interference"]) + _values(metrics["values"]) + _antipodal(metrics["antipodal"])
    L += _shapes(metrics["shapes"]) + _bridge(metrics["bridge"])
    return "\n".join(L) + "\n"
