"""The audio report's page: verdict table first, then the per-layer, word-identity and causal
tables, and one figure (``audio.md``, ``audio.json``, ``audio_layers.png``)."""

from __future__ import annotations

from pathlib import Path

from experiments.report import fmt, pyplot, save_figure, write_report

__all__ = ["markdown", "verdicts", "write"]

KINDS = ("trained", "random-init", "log-mel")


def _ci(v: float, lo: float, hi: float) -> str:
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]"


def verdicts(res: dict) -> list[dict]:
    """Claim -> our number with CI -> verdict -> reason, each at the site chosen on anchors."""
    lay, best = res["layers"], res["best_site"]
    t = lay["trained"][best["trained"]]
    r = lay["random-init"][best["random-init"]]
    m = lay["log-mel"][best["log-mel"]]
    n = t["n_categories"]
    det = t["detectable"]
    rows = [{
        "claim": "AST: 50/50 audio categories detectable by sign agreement",
        "ours": f"{det}/{n} categories detectable at {best['trained']}; median held-out AUC "
                f"{_ci(t['held_out_auc'], t['lo'], t['hi'])}",
        "verdict": "holds" if det == n else "partly" if det >= n / 2 else "does not hold",
        "reason": "detectable = held-out AUC CI above the random-labelled null's 95th percentile"}]
    above = min(t["lo"] - r["held_out_auc"], t["lo"] - m["held_out_auc"])
    rows.append({
        "claim": "Sign structure is not specific to language (learned, beyond input and "
                 "architecture)",
        "ours": f"trained {fmt(t['held_out_auc'])} vs random-init {fmt(r['held_out_auc'])} "
                f"({best['random-init']}) vs log-mel {fmt(m['held_out_auc'])}; detectable "
                f"{det} / {r['detectable']} / {m['detectable']}",
        "verdict": "holds" if above > 0 else "not shown",
        "reason": ("the trained median's CI lies above both references' medians" if above > 0
                   else "the trained median's CI does not clear a reference: the input or an "
                        "untrained encoder already sorts these clips")})
    kn = res["nearest_neighbour"]
    tk, rk = kn["trained"][best["trained"]], kn["random-init"][best["random-init"]]
    mk = kn["log-mel"]["logmel"]
    rows.append({
        "claim": "(ours) signs keep word identity across voices",
        "ours": f"1-NN {_ci(tk['accuracy'], tk['lo'], tk['hi'])} vs random-init "
                f"{fmt(rk['accuracy'])}, log-mel {fmt(mk['accuracy'])}, chance {fmt(tk['chance'])}",
        "verdict": "holds" if tk["lo"] > max(rk["accuracy"], mk["accuracy"], tk["chance"])
        else "not shown",
        "reason": "neighbours only among other voices' clips; layer = the one chosen on anchors"})
    c = res["causal"]
    if "feature" in c:
        f = c["feature"]
        rows.append({
            "claim": f"(issue 16) flipping '{c['category']}' stops its words being transcribed",
            "ours": f"effect {fmt(f['effect'], sign=True)} (survival {fmt(f['survival_target'])} "
                    f"vs others {fmt(f['survival_other'])}); controls median "
                    f"{fmt(c['control_effects']['median'], sign=True)}, max "
                    f"{fmt(c['control_effects']['max'], sign=True)}; p = {fmt(c['p'])}",
            "verdict": "holds" if c["p"] < 0.05 and f["effect"] > 0 else "not shown",
            "reason": f"{c['correct_target']}+{c['correct_other']} baseline-correct clips; "
                      f"{c['control_effects']['n']} controls (p floor "
                      f"{fmt(1 / (1 + c['control_effects']['n']))})"})
    return rows


def markdown(res: dict) -> str:
    ev, tm = res["evidence"], res["timing"]
    L = [f"# Sign features in Whisper's encoder: {res['model']} on spoken words", "",
         f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s on CPU; caches "
         f"{tm['cache_trained']:.0f} + {tm['cache_random']:.0f} s, catalogs "
         f"{tm['catalogs']:.0f} s, causal {tm['causal']:.0f} s).", "",
         f"Clips: {res['n_clips']} = {len(res['categories'])} categories x "
         f"{res['words_per_category']} words x voices {', '.join(res['voices'])} x speeds "
         f"{', '.join(map(str, res['speeds']))} (espeak-ng; a subset of the set, to keep a run "
         "within minutes on 2 CPU cores). Sites: encoder `resid.*`, mean over each clip's "
         "valid frames (the feature extractor's frame mask mapped onto encoder positions by the "
         "model's own stride-2 rule). Split by word: every voice of a word on one side. "
         f"Nulls: {ev['n_draws']} draws of random examples and of random labelled examples; "
         "CIs: bootstrap over held-out words' clips (per category) and over categories (medians).",
         "", "## Verdict", "", "| claim | ours | verdict | why |", "|---|---|---|---|"]
    for v in verdicts(res):
        L.append(f"| {v['claim']} | {v['ours']} | **{v['verdict']}** | {v['reason']} |")
    L += ["", "Every 'best' site is the one with the highest median (over categories) mean "
          "per-dim AUC on the anchors; held-out numbers never choose anything.", "",
          "## Per layer", "",
          "| model | site | held-out AUC (median, CI) | random examples | random labelled "
          "| detectable | p<0.05 | anchor score |", "|---|---|---|---|---|---|---|---|"]
    for kind in KINDS:
        for site, r in res["layers"][kind].items():
            mark = " (best)" if site == res["best_site"][kind] else ""
            L.append(f"| {kind} | {site}{mark} | {_ci(r['held_out_auc'], r['lo'], r['hi'])} | "
                     f"{fmt(r['null_examples_auc'])} | {fmt(r['null_labelled_auc'])} | "
                     f"{r['detectable']}/{r['n_categories']} | {r['p_below_05']} | "
                     f"{fmt(r['anchor_score'])} |")
    L += ["", "The log-mel reference is the mean log-mel over the same valid frames minus its "
          "per-bin mean over these clips, so its signs say 'more or less energy in this band "
          "than the typical clip'; it is built with the trained cache's examples, labels and "
          "groups and goes through the same catalog code.", "",
          "## Per category at the best sites", "",
          "| category | trained | random-init | log-mel |", "|---|---|---|---|"]
    cats = {k: res["layers"][k][res["best_site"][k]]["categories"] for k in KINDS}
    for name in sorted(cats["trained"]):
        cells = []
        for k in KINDS:
            m = cats[k].get(name)
            cells.append(_ci(m["held_out_auc"], m["held_out_auc_lo"], m["held_out_auc_hi"])
                         if m else "–")
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L += ["", "## Word identity across voices (1-NN by Hamming distance)", "",
          "| model | site | accuracy (Wilson 95%) | chance |", "|---|---|---|---|"]
    for kind in KINDS:
        for site, r in res["nearest_neighbour"][kind].items():
            L.append(f"| {kind} | {site} | {_ci(r['accuracy'], r['lo'], r['hi'])} | "
                     f"{fmt(r['chance'])} |")
    L += ["", *_causal_md(res["causal"])]
    return "\n".join(L) + "\n"


def _causal_md(c: dict) -> list[str]:
    L = ["## Causal test", "",
         f"Category '{c['category']}', feature of {c['k']} dims at {c['site']} (site chosen by "
         f"{c['site_chosen_by']}), mode away on every encoder position. Clips: all "
         f"{c['n_target']} of the category and {c['n_other']} of others (seeded); baseline "
         f"transcript exactly the word for {c['correct_target']} of {c['n_target']} and "
         f"{c['correct_other']} of {c['n_other']} (Whisper mishears many isolated synthetic "
         "words). Effect = survival of other categories' words - survival of the category's."]
    if "feature" not in c:
        return L + ["", f"Not run: {c['skipped']}."]
    L += ["", "| condition | seed | survival (category) | survival (others) | effect |",
          "|---|---|---|---|---|"]
    rows = [("feature", c["feature"])] + [(k, x) for k, xs in c["controls"].items() for x in xs]
    for name, x in rows:
        L.append(f"| {name} | {x['seed']} | {fmt(x['survival_target'])} | "
                 f"{fmt(x['survival_other'])} | {fmt(x['effect'], sign=True)} |")
    L += ["", f"p = (1 + #controls with effect >= the feature's) / (1 + #controls) = "
          f"{fmt(c['p'])}."]
    return L


def figure(res: dict, path: Path) -> Path:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind, style in zip(KINDS, ("o-", "s--", "^:")):
        tab, knn = res["layers"][kind], res["nearest_neighbour"][kind]
        sites = list(tab)
        x = list(range(len(sites))) if kind != "log-mel" else [-1]
        a.errorbar(x, [tab[s]["held_out_auc"] for s in sites],
                   yerr=[[tab[s]["held_out_auc"] - tab[s]["lo"] for s in sites],
                         [tab[s]["hi"] - tab[s]["held_out_auc"] for s in sites]],
                   fmt=style, label=kind, capsize=3)
        b.plot(x, [knn[s]["accuracy"] for s in sites], style, label=kind)
    nulls = res["layers"]["trained"]
    a.plot(range(len(nulls)), [r["null_labelled_q95"] for r in nulls.values()], "k:", lw=1,
           label="random labelled q95")
    b.axhline(next(iter(res["nearest_neighbour"]["trained"].values()))["chance"], color="k",
              lw=1, ls=":", label="chance")
    for ax, title in ((a, "held-out AUC (median over categories)"),
                      (b, "1-NN word identity across voices")):
        ax.set_xlabel("encoder layer (-1: log-mel input)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def write(out_dir, res: dict) -> Path:
    """``audio.json``, ``audio.md`` and ``audio_layers.png`` under ``out_dir``."""
    out = Path(out_dir)
    figure(res, out / "audio_layers.png")
    return write_report(out, "audio", res, markdown(res))
