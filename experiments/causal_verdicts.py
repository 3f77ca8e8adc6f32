"""The verdict rows of the causal page: paper claim -> our number -> verdict -> reason.

Rules (fixed in code, applied the same way to every model):

- **E5** (all categories discoverable in K and V, keys after RoPE): over the keys after the
  rotary embedding (``k_rot``) and the values, the share of categories *above the site's own
  null* (random-token and random-listed-word references, both p < 0.05); *reproduced* when every
  site keeps 90% and the embedding signs do not (otherwise the criterion does not discriminate:
  *partially*); *partially* when some site keeps 90%; else *not reproduced*. Older runs without
  the rotary keys and nulls: the share with held-out AUC >= 0.9 over the K and V sites.
- **E6** (single writers for 20% of features, 0% for random weights; coalitions > 0.7 on
  99.9%): cross-validated fractions averaged over layers (positive polarity), model against the
  larger of its Gaussian and random-init controls; *not reproduced* when the model exceeds them
  by less than 0.05. Judged on the top-32 features (those E7 flips); the tau-rule and wide
  (hundreds of dims) features, where run, are quoted beside; the tau rule is judged instead when
  its median feature has >= 100 dims (the paper's regime).
- **E7 suppression**: *reproduced* when away beats both control distributions (p < alpha) for at
  least half the concepts; *partially* when either count exceeds chance (binomial P < 0.05);
  else *not reproduced*.
- **E7 controls ~ 0**: the larger |median control effect| over |median away effect|: <= 0.1
  *reproduced*, <= 0.5 *partially*, else *not reproduced*.
- **E7 depth gating** (only late layers): *reproduced* when the first third's excess interval
  contains 0 and the last third's lies below 0; *not reproduced* when the first third's lies
  below 0 too; else *partially*.
- **E7 single dims do nothing**: counted per concept: the feature's best dim alone does at least
  half of the away effect for no concept: *reproduced*; for fewer than half: *partially*; else
  *not reproduced*.
- **Specificity**: *reproduced* when P(own-best count by chance) < 0.05 and the rate >= 50%;
  *partially* when only the first holds; else *not reproduced*.
"""

from __future__ import annotations

from experiments.report import fmt

__all__ = ["verdicts"]


def _row(claim: str, ours: str, verdict: str, why: str) -> dict:
    return {"claim": claim, "ours": ours, "verdict": verdict, "why": why}


def _e5(r: dict) -> dict:
    sites = r["e5"]["sites"]
    rotary = any(s.startswith("k_rot.") for s in sites)
    has_null = "above_null" in next(iter(sites.values()))
    kinds = ("k_rot", "v") if rotary else ("k", "v")
    kept = (lambda v: v["above_null"]) if has_null else (lambda v: v["discoverable"]["0.9"])
    rule = "above their site's null" if has_null else "with held-out AUC ≥ 0.9"
    kv = {s: v for s, v in sites.items() if s.split(".")[0] in kinds}
    share = {s: kept(v) / v["n_categories"] for s, v in kv.items()}
    emb = sites.get("embed")
    emb_share = kept(emb) / emb["n_categories"] if emb else float("nan")
    lo, hi = min(share.values()), max(share.values())
    if lo >= 0.9:
        verdict = "reproduced" if not emb_share >= 0.9 else "partially"
    else:
        verdict = "partially" if hi >= 0.9 else "not reproduced"
    n = next(iter(kv.values()))["n_categories"]

    def rng(a, b):
        return f"{a}" if a == b else f"{a}–{b}"

    def span(kind):
        got = [kept(v) for s, v in sites.items() if s.startswith(kind + ".")]
        return rng(min(got), max(got)) if got else "–"

    ours = (f"{rng(round(lo * n), round(hi * n))} of {n} categories {rule} at each of {len(kv)} "
            f"{'K-after-RoPE' if rotary else 'K'}/V sites (K after RoPE {span('k_rot')}, before "
            f"{span('k')}, V {span('v')}, resid {span('resid')}); embedding signs "
            f"{round(emb_share * n) if emb else '–'}")
    why = (f"only {n} of the paper's 175 categories have enough single-token members"
           + ("" if rotary else "; keys read before RoPE")
           + ("; the embedding alone passes too, so the criterion does not discriminate"
              if emb_share >= 0.9 else ""))
    return _row("E5: all 175 categories discoverable in K and V", ours, verdict, why)


def _e6(r: dict) -> list[dict]:
    rules = {"top-32": r["e6"]}
    judged = "top-32"
    for label, v in r.get("e6_rules", {}).items():
        if not v["e6"]:
            continue
        rules[label] = v["e6"]
        medians = [d[1] for d in v["dims"].values() if d]
        if label.startswith("τ") and medians and min(medians) >= 100:
            judged = label

    def mean(e6, src, key):
        return sum(e6[s]["positive"][src][key] for s in e6) / len(e6)

    out = []
    for key, claim in (("single_writer_fraction_cv", "E6: 20% of features have a single FFN "
                        "writer (random weights 0%)"),
                       ("coalition_above_threshold_cv", "E6: top-200 coalitions vote > 0.7 on "
                        "99.9% of features")):
        parts, margins = [], {}
        for label, e6 in rules.items():
            m, g, ri = (mean(e6, src, key) for src in ("model", "gaussian", "random_init"))
            margins[label] = (m, m - max(g, ri))
            parts.append(f"{label} features: model {m:.2f}, Gaussian {g:.2f}, random init {ri:.2f}")
        m, margin = margins[judged]
        verdict = "not reproduced" if margin < 0.05 else ("reproduced" if m >= 0.15 else "partially")
        out.append(_row(claim, "cross-validated, mean over layers: " + "; ".join(parts), verdict,
                        ("model no better than its controls" if margin < 0.05 else
                         "model above its controls") + f" (judged on the {judged} features"
                        + ("" if r.get("e6_rules") else "; the paper's τ-rule features not run")
                        + ")"))
    return out


def _e7(r: dict) -> list[dict]:
    e7 = r["e7"]
    sm, st = e7["summary"], e7["settings"]
    s, d = sm["stratified"], sm["disjoint"]
    n = s["n"]
    if s["n_significant"] >= n / 2 and d["n_significant"] >= n / 2:
        v = "reproduced"
    elif min(s["p_count"], d["p_count"]) < 0.05:
        v = "partially"
    else:
        v = "not reproduced"
    rows = [_row("E7: flipping a feature away suppresses its concept",
                 f"away median Δ mass {fmt(sm['away_median'], 3, True)}; p < {st['alpha']} vs "
                 f"{st['n_draws']} stratified draws for {s['n_significant']}/{n} concepts, vs "
                 f"{st['n_draws']} disjoint draws for {d['n_significant']}/{n} (chance "
                 f"{s['expected_by_chance']:.1f})", v,
                 f"layers chosen on {st['n_select']} separate prompts, measured on {st['n_eval']}; "
                 f"{100 * d['share_as_strong']:.0f}% of disjoint and "
                 f"{100 * s['share_as_strong']:.0f}% of stratified draws are as strong")]
    ratio = max(abs(s["control_median"]), abs(d["control_median"]), abs(sm["toward_median"])) / \
        max(abs(sm["away_median"]), 1e-12)
    v = "reproduced" if ratio <= 0.1 else ("partially" if ratio <= 0.5 else "not reproduced")
    rows.append(_row("E7: toward, disjoint and random controls ≈ 0",
                     f"median Δ mass: toward {fmt(sm['toward_median'], 3, True)}, stratified "
                     f"{fmt(s['control_median'], 3, True)}, disjoint "
                     f"{fmt(d['control_median'], 3, True)} (away {fmt(sm['away_median'], 3, True)})",
                     v, f"largest control is {100 * ratio:.0f}% of the away effect"))
    ds = e7["depth_summary"]
    early, late = ds["early"], ds["late"]
    if early["lo"] <= 0 <= early["hi"] and late["hi"] < 0:
        v = "reproduced"
    elif early["hi"] < 0:
        v = "not reproduced"
    else:
        v = "partially"
    rows.append(_row("E7: depth-gated (only late layers act)",
                     f"away minus control median: first third {fmt(early['mean'], 3, True)} "
                     f"[{fmt(early['lo'], 3, True)}, {fmt(early['hi'], 3, True)}], last third "
                     f"{fmt(late['mean'], 3, True)} [{fmt(late['lo'], 3, True)}, "
                     f"{fmt(late['hi'], 3, True)}]", v,
                     "early flips act beyond their controls too" if early["hi"] < 0 else
                     ("late flips act beyond their controls, early ones do not"
                      if late["hi"] < 0 else "neither third acts clearly beyond its controls")))
    dists = e7.get("distributions", [])
    half = sum(d["effects"]["single"] <= 0.5 * d["effects"]["away"] < 0 for d in dists)
    v = "reproduced" if half == 0 else ("partially" if half < len(dists) / 2 else "not reproduced")
    rows.append(_row("E7: single dims do nothing", f"best dim alone: median Δ mass "
                     f"{fmt(sm['single_median'], 4, True)} (away {fmt(sm['away_median'], 3, True)})",
                     v, f"the best dim alone does at least half of the away effect for {half} of "
                     f"{len(dists)} concepts"))
    sp = e7["specificity"]["stats"]
    if sp["p_chance"] < 0.05:
        v = "reproduced" if sp["rate"] >= 0.5 else "partially"
    else:
        v = "not reproduced"
    rows.append(_row("E7 (implied): a flip acts on its own concept",
                     f"own flip strongest for {sp['own_best']}/{sp['n']} "
                     f"({100 * sp['rate']:.0f}% [{100 * sp['rate_lo']:.0f}, "
                     f"{100 * sp['rate_hi']:.0f}]); chance {100 * sp['chance']:.0f}%", v,
                     f"P(≥ {sp['own_best']} by chance) = {sp['p_chance']:.2g}; own-vs-other margin "
                     f"{fmt(sp['margin'], 3, True)} [{fmt(sp['margin_lo'], 3, True)}, "
                     f"{fmt(sp['margin_hi'], 3, True)}] Δ log mass"))
    return rows


def verdicts(r: dict) -> list[dict]:
    """Every verdict row of a causal result (``causal.json``)."""
    return [_e5(r), *_e6(r), *_e7(r)]
