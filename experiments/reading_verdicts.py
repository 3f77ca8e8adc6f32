"""The verdict rows of the reading page: paper claim -> our number -> verdict -> reason.

Rules (fixed in code, the same for every model; intervals are 95%):

- **E3 prototype AUC** (0.975–0.993): at the site and config chosen by nested CV on the anchors
  only. *Reproduced* when the interval reaches 0.975; *partially* when it does not but at least
  half the categories are above both nulls; else *not reproduced*.
- **E3 mean per-dim AUC** (~0.80): *reproduced* when the interval overlaps 0.77–0.83.
- **E3 discoverable** (137–175 of 175, 78% or more): the share of usable categories above both
  nulls with held-out AUC >= 0.9; *reproduced* when it and the share of categories usable at
  all are both >= 78%, *partially* when only the first is, else *not reproduced*.
- **E1** (top-5 72–93%, 59.5% at 32B): *reproduced* when the Wilson interval reaches 0.595.
- **E1b** (top-|h| dims beat all dims): *reproduced* when some fraction's interval lies above
  the all-dims value.
- **E2** (top-4096 80–90%): *reproduced* when the cache readout (the paper's) reaches 0.80;
  *partially* when only the unembedding-sign readout (our added reading) does.
- **E8** (100% yield): *reproduced* when every site's yield >= 0.95 and the i.i.d. null's <= 0.05;
  *partially* when every site beats its null; else *not reproduced*.
- **E9 mean MI** (0.0004–0.0051 bits): over every site; *reproduced* when all lie in the range,
  *partially* when some do. **None above 0.1**: *not reproduced* when any site's max exceeds it.
"""

from __future__ import annotations

from bagofdims.steering.significance import wilson_interval
from experiments.report import fmt

__all__ = ["verdicts"]


def _row(claim, ours, verdict, why) -> dict:
    return {"claim": claim, "ours": ours, "verdict": verdict, "why": why}


def _ci(x: dict, digits: int = 3) -> str:
    return f"{fmt(x['median'], digits)} [{fmt(x['lo'], digits)}, {fmt(x['hi'], digits)}]"


def _wilson(p: float, n: int) -> str:
    lo, hi = wilson_interval(round(p * n), n)
    return f"{fmt(p)} [{fmt(lo)}, {fmt(hi)}]"


def _e3(res: dict) -> list[dict]:
    s = res["e3_selection"]
    site, label = s["choice"]["site"], s["choice"]["label"]
    h, n = s["held_out_auc"], s["n_categories"]
    nl, emb, gain = s["null_listed"], s["embedding"], s["gain_over_embedding"]
    v = "reproduced" if h["hi"] >= 0.975 else ("partially" if s["above_null"] >= n / 2
                                               else "not reproduced")
    rows = [_row("E3: prototype held-out AUC 0.975–0.993",
                 f"{_ci(h)} at {site}, {label} (chosen on anchors only)", v,
                 f"random listed words give {fmt(nl['median'])} ({fmt(nl['q10'])}–"
                 f"{fmt(nl['q90'])}), embedding signs {fmt(emb['median'])}: the residual stream "
                 f"adds {fmt(gain['median'], 3, True)} [{fmt(gain['lo'], 3, True)}, "
                 f"{fmt(gain['hi'], 3, True)}]")]
    m = s["mean_dim_auc"]
    v = "reproduced" if m["lo"] <= 0.83 and m["hi"] >= 0.77 else "not reproduced"
    tau = res["e3"].get(site, {}).get("tau_dims_mean")
    rows.append(_row("E3: mean per-dim AUC ~0.80", f"{_ci(m)} over the kept dims", v,
                     "top-k keeps dims by rank; dims with AUC ≥ 0.75 (the paper's τ) number "
                     f"{fmt(tau, 1)} per category at {site} (k = 32 catalog)"))
    both = sum(c["above_null"] and c["held_out_auc"] >= 0.9 for c in s["per_category"].values())
    used, skipped = res["categories"]["used"], res["categories"]["skipped"]
    share, coverage = both / n, used / (used + skipped)
    v = "not reproduced" if share < 0.78 else ("reproduced" if coverage >= 0.78 else "partially")
    rows.append(_row("E3: 137–175 of 175 categories discoverable",
                     f"{both} of {n} usable categories above both nulls (p < "
                     f"{s['evidence']['alpha']}) with AUC ≥ 0.9", v,
                     f"only {used} of {used + skipped} listed categories have 60 single-token "
                     "members; 'discoverable' (AUC ≥ 0.9) is our threshold"))
    return rows


def _e1_e2(res: dict) -> list[dict]:
    e1, fr, e2 = res["e1"]["final"], res["e1_final_fracs"], res["e2"]["final"]
    n = e1["n"]
    top5 = e1["all"]["top5_own"]
    lo, hi = wilson_interval(round(top5 * n), n)
    rows = [_row("E1: sign-only LM head puts the model's top-1 in its top-5 72–93% (59.5% at 32B)",
                 f"{_wilson(top5, n)} at final", "reproduced" if hi >= 0.595 else "not reproduced",
                 f"{res.get('model', 'this model')}, far smaller than the paper's 4B–32B; signs "
                 f"scaled by mean |h|: {fmt(e1['scaled']['top5_own'])} "
                 f"(cross-fitted {fmt(e1['scaled_heldout']['top5_own'])})")]
    fracs = {k: v["top5_own"] for k, v in fr.items() if k.startswith("top_")}
    above = [k for k, v in fracs.items() if wilson_interval(round(v * n), n)[0] > top5]
    rows.append(_row("E1b: only the top-|h| dims' signs do better than all dims",
                     "top-5 own " + ", ".join(f"{k[4:]}: {fmt(v)}" for k, v in fracs.items())
                     + f" vs all {fmt(top5)}", "reproduced" if above else "not reproduced",
                     f"{len(above)} of {len(fracs)} fractions lie above all dims"))
    cache, unemb = e2["cache"]["own_top4096"], e2.get("unembed", {}).get("own_top4096")
    n2 = res["n_positions"]
    c_hi = wilson_interval(round(cache * n2), n2)[1]
    u_hi = wilson_interval(round(unemb * n2), n2)[1] if unemb is not None else 0.0
    v = "reproduced" if c_hi >= 0.8 else ("partially" if u_hi >= 0.8 else "not reproduced")
    rows.append(_row("E2: the model's next token in the Hamming top-4096 80–90%",
                     f"cached patterns {_wilson(cache, n2)}; unembedding signs "
                     f"{_wilson(unemb, n2) if unemb is not None else '–'} (final)", v,
                     "single-token cache patterns describe the current token (top-1 "
                     f"{fmt(e2['cache'].get('cur_top1'))}), not the next; chance "
                     f"{fmt(e2['cache']['chance_top4096'])}"))
    return rows


def _e8_e9(res: dict) -> list[dict]:
    e8, null = res["e8"], res.get("e8_null", {})
    ys = {s: r["yield"] for s, r in e8.items()}
    ny = {s: r["yield"] for s, r in null.items()}
    if not ny:
        v, why = "not tested", "no null computed"
    else:
        beats = all(ys[s] > ny.get(s, 1.0) for s in ys)
        v = "reproduced" if min(ys.values()) >= 0.95 and max(ny.values()) <= 0.05 else \
            ("partially" if beats else "not reproduced")
        why = (f"i.i.d. signs with the real per-dim rates yield {fmt(min(ny.values()))}–"
               f"{fmt(max(ny.values()))}; our 'sparsity' is the share of unused dims, not the "
               "paper's firing sparsity")
    rows = [_row("E8: unsupervised discovery, 100% yield (1500 seeds)",
                 "yield " + ", ".join(f"{s} {fmt(y)}" for s, y in ys.items()), v, why)]
    e9 = res["e9"]
    means = [r["mean_mi"] for r in e9.values()]
    inside = sum(0.0004 <= m <= 0.0051 for m in means)
    v = "reproduced" if inside == len(means) else ("partially" if inside else "not reproduced")
    rot = sum(r["mean_mi"] < r["mean_mi_rotated"] for r in e9.values())
    rows.append(_row("E9: mean pairwise sign MI 0.0004–0.0051 bits",
                     f"{fmt(min(means), 4)}–{fmt(max(means), 4)} over {len(means)} sites", v,
                     f"{inside} of {len(means)} sites in range; below the rotated copy at {rot}; "
                     f"plug-in, no bias correction (~1/(2n ln 2) = "
                     f"{fmt(1 / (2 * next(iter(e9.values()))['n'] * 0.6931), 4)} bits); "
                     "bias-corrected, with a shuffled baseline and type-level MI: mi.md"))
    over = sum(r["max_mi"] > 0.1 for r in e9.values())
    rows.append(_row("E9: no pair above 0.1 bits", f"max MI above 0.1 at {over} of {len(means)} "
                     f"sites (largest {fmt(max(r['max_mi'] for r in e9.values()))})",
                     "not reproduced" if over else "reproduced",
                     "a stated result: some dim pairs share much more than the mean (mi.md: not sampling noise)"))
    return rows


def verdicts(res: dict) -> list[dict]:
    """Every verdict row of a reading result (``reading.json``)."""
    return [*_e3(res), *_e1_e2(res), *_e8_e9(res)]
