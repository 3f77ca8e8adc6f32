"""The verdict rows of the probes page (E4): paper claim -> our number -> verdict -> reason.

Rules (fixed in code before any result; the same for every model):

- Where: the *primary* site (the first of the run: chosen on anchors only, see
  ``probe_comparison.pick_sites``) and the ``states`` input (the paper's probes read hidden
  states; ``signs`` is used, and named, only when states were not run). The late site is quoted
  in the reason, never used for the verdict.
- Interval: the mean over categories with a 95% percentile bootstrap interval over categories
  (1000 resamples, seed 0; ``scipy.stats.bootstrap``). It covers the spread over categories, not
  the sampling of test tokens.
- (a) **probe gain ~ +0.018**: gain = logistic AUC - prototype AUC, paired on the same test rows.
  *reproduced* when the interval contains 0.018; *partially* when it lies entirely above 0 but
  misses 0.018 (the probe gains, by a different amount); *not reproduced* otherwise.
- (b) **sign agreement 0.999**: the share of the prototype's dims where the fold-averaged
  probe weight has the prototype's sign. *reproduced* when the interval reaches 0.99;
  *partially* when its lower end is >= 0.75; *not reproduced* otherwise.
- (c) **axis alignment**: per category, the |w| share on the prototype dims minus the rotated
  control's share (the same probe on Haar-rotated states, prototypes found again there).
  *reproduced* when the difference's interval lies above 0 and the mean standard share is at
  least 1.5x the mean rotated share; *partially* when the interval lies above 0 but the ratio
  is below 1.5; *not reproduced* otherwise (the standard basis is not clearly special).
- (d) **MLP adds nothing**: per category, MLP AUC - logistic AUC on the same test rows at the
  MLP's site (same input). *reproduced* when the interval's upper end is <= +0.005 (a nonlinear
  probe adds less than 0.005 AUC); *not reproduced* when its lower end is > +0.005; *partially*
  otherwise; *not tested* without MLP rows.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from bagofdims.errors import InvalidArgument
from experiments.report import fmt, verdict_row

__all__ = ["PAPER", "RULES", "bootstrap_mean", "table", "verdicts"]

PAPER = {"gain": 0.018, "sign_agreement": 0.999, "mlp": "adds nothing"}
RULES = {"n_boot": 1000, "level": 0.95, "seed": 0, "sign_reproduced": 0.99,
         "sign_partial": 0.75, "ratio": 1.5, "mlp_margin": 0.005}


def bootstrap_mean(values, n_boot: int = RULES["n_boot"], level: float = RULES["level"],
                   seed: int = RULES["seed"]) -> dict:
    """Mean of ``values`` (one per category) with a percentile bootstrap interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2 or not np.isfinite(v).all():
        raise InvalidArgument(f"need at least 2 finite values (one per category) for a bootstrap "
                              f"interval; got {v.size} values, {int((~np.isfinite(v)).sum())} "
                              "not finite. Check that the run produced every category's row.")
    if np.ptp(v) == 0:  # no spread: the interval is the value itself
        return {"mean": float(v[0]), "lo": float(v[0]), "hi": float(v[0]), "n": int(v.size)}
    ci = sps.bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=level,
                       method="percentile", random_state=np.random.default_rng(seed)
                       ).confidence_interval
    return {"mean": float(v.mean()), "lo": float(ci.low), "hi": float(ci.high), "n": int(v.size)}


def _row(claim, ours, verdict, why, ci=None) -> dict:
    return {"claim": claim, "ours": ours, "verdict": verdict, "why": why, "ci": ci}


def _ci(c: dict, digits: int = 3, sign: bool = False) -> str:
    return (f"{fmt(c['mean'], digits, sign)} [{fmt(c['lo'], digits, sign)}, "
            f"{fmt(c['hi'], digits, sign)}]")


def _rows_of(rep: dict) -> tuple[str, list[dict]]:
    inputs = rep["settings"]["inputs"]
    inp = "states" if "states" in inputs else inputs[0]
    return inp, [r for r in rep["rows"] if r["input"] == inp]


def _col(rows: list[dict], key: str) -> list[float]:
    missing = [r["category"] for r in rows if key not in r]
    if missing:
        raise InvalidArgument(f"rows lack {key!r} (e.g. {missing[:3]}); rerun "
                              "scripts/reproduce_probes.py (the rotation control and l2 CV are "
                              "part of the current protocol)")
    return [r[key] for r in rows]


def verdicts(res: dict) -> list[dict]:
    """The four verdict rows (a)-(d) of a probes result (``probes.json``)."""
    reps = res.get("reports") or []
    if not reps:
        raise InvalidArgument("the result has no site reports; run the comparison first")
    rep = reps[0]
    inp, rows = _rows_of(rep)
    where = f"{rep['site']}, {inp}"
    late = {r["site"]: _rows_of(r) for r in reps[1:]}
    late_txt = "; ".join(f"{s}: {fmt(float(np.mean(_col(rs, 'gain'))), 3, True)}"
                         for s, (_, rs) in late.items())
    out = []

    g = bootstrap_mean(_col(rows, "gain"))
    v = ("reproduced" if g["lo"] <= PAPER["gain"] <= g["hi"] else
         "partially" if g["lo"] > 0 else "not reproduced")
    out.append(_row(f"(a) a trained logistic probe adds ~+{PAPER['gain']} AUC over the prototype",
                    f"{_ci(g, 3, True)} ({where})", v,
                    f"paired on the same test rows, l2 chosen by inner CV; probe wins in "
                    f"{sum(x > 0 for x in _col(rows, 'gain'))} of {len(rows)} categories"
                    + (f"; late site {late_txt}" if late_txt else ""), g))

    s = bootstrap_mean(_col(rows, "sign_agreement"))
    rs = bootstrap_mean(_col(rows, "rot_sign_agreement"))
    v = ("reproduced" if s["hi"] >= RULES["sign_reproduced"] else
         "partially" if s["lo"] >= RULES["sign_partial"] else "not reproduced")
    out.append(_row(f"(b) probe weights agree in sign with the prototype on "
                    f"{PAPER['sign_agreement']:.1%} of its dims", f"{_ci(s)} ({where})", v,
                    f"the rotated control agrees {_ci(rs)}" +
                    (": as high in a random basis, so sign agreement alone does not show axis "
                     "alignment" if rs["mean"] >= s["lo"] else
                     ", below ours"), s))

    std, rot = _col(rows, "mass_on_dims"), _col(rows, "rot_mass_on_dims")
    d = bootstrap_mean(np.subtract(std, rot))
    ratio = float(np.mean(std) / np.mean(rot)) if np.mean(rot) > 0 else math.inf
    v = ("not reproduced" if d["lo"] <= 0 else
         "reproduced" if ratio >= RULES["ratio"] else "partially")
    chance = float(np.mean(_col(rows, "chance_mass")))
    out.append(_row("(c) the probe is axis-aligned on the prototype's dims",
                    f"\\|w\\| share {fmt(float(np.mean(std)))} vs rotated {fmt(float(np.mean(rot)))} "
                    f"(chance {fmt(chance)}); difference {_ci(d, 3, True)}, ratio {fmt(ratio, 2)} "
                    f"({where})", v,
                    ("the standard basis is not clearly above a random basis: 'axis-aligned' is "
                     "not supported" if v == "not reproduced" else
                     "the standard-basis share exceeds the rotated control's") +
                    f" (rule: interval above 0 and ratio >= {RULES['ratio']})", d))

    mrep = next((r for r in reps if any(not math.isnan(x["mlp_auc"]) for x in r["rows"])), None)
    if mrep is None:
        out.append(_row("(d) an MLP probe adds nothing", "–", "not tested", "no MLP was run"))
    else:
        minp, mrows = _rows_of(mrep)
        mrows = [r for r in mrows if not math.isnan(r["mlp_auc"])]
        m = bootstrap_mean([r["mlp_auc"] - r["logistic_auc"] for r in mrows])
        margin = RULES["mlp_margin"]
        v = ("reproduced" if m["hi"] <= margin else
             "not reproduced" if m["lo"] > margin else "partially")
        out.append(_row("(d) an MLP probe adds nothing over the logistic probe",
                        f"MLP − logistic AUC {_ci(m, 3, True)} ({mrep['site']}, {minp}, "
                        f"{len(mrows)} categories)", v,
                        f"'nothing' = less than +{margin} AUC; the MLP's mean-gradient sign "
                        f"agreement is {fmt(float(np.mean([r['mlp_sign_agreement'] for r in mrows])))}",
                        m))
    return out


def table(rows: list[dict]) -> str:
    """The verdict rows as a markdown table."""
    if not rows:
        raise InvalidArgument("no verdict rows to write; pass verdicts(result)")
    lines = ["| paper claim | ours (mean [95% CI over categories]) | verdict | why |",
             "|---|---|---|---|"]
    lines += [verdict_row(r) for r in rows]
    return "\n".join(lines) + "\n"
