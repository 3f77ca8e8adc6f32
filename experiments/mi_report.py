"""The E9 page (``mi.md`` and ``mi.json``) of one model, from the result
``scripts/reproduce_mi.py`` computes with :mod:`experiments.mi`. It opens with a verdict table:
paper claim -> our number -> verdict -> reason.

Rules (fixed in code before results, the same for every model; per-site rules and estimators
in :mod:`experiments.mi`; "over sites" is every site, none picked on its outcome):

- **(a) mean pairwise sign MI 0.0004–0.0051 bits** (position level, Miller-Madow): *reproduced*
  when every site's mean lies in the range, *partially* when some do, else *not reproduced*.
- **(b) type-level mean MI ≈ 0.0014 bits** (Miller-Madow over the cache's tokens): "≈" is within
  a factor of 2 (0.0007–0.0028); *reproduced* when every cached site is within it, *partially*
  when some are, else *not reproduced*; *not tested* without a cache.
- **(c) no pair above 0.1 bits** (position level, Miller-Madow): *reproduced* when no site has
  such a pair, else *not reproduced*, with the count and the largest pair.
- **(d) the low MI is a property of the standard basis** (the paper shows no control; our
  reading): *reproduced* when every site's MI is lower than its rotated control's (rule
  ``basis`` in :mod:`experiments.mi`), *partially* when some are, else *not reproduced*.
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments.mi import PAIR_LIMIT, PAPER_RANGE, PAPER_TYPE_LEVEL, SPREAD_Z
from experiments.report import fmt, verdict_row, write_report

__all__ = ["TYPE_FACTOR", "markdown", "verdicts", "write"]

TYPE_FACTOR = 2.0  # "≈ 0.0014 bits" means within this factor


def _row(claim: str, ours: str, verdict: str, why: str) -> dict:
    return {"claim": claim, "ours": ours, "verdict": verdict, "why": why}


def _share(hits: int, total: int) -> str:
    return "reproduced" if hits == total else ("partially" if hits else "not reproduced")


def _span(values, digits: int = 4) -> str:
    lo, hi = min(values), max(values)
    return f"{fmt(lo, digits)}{' to ' if lo < 0 else '–'}{fmt(hi, digits)}"  # no "-1–-2"


def _pair(site: str, p: dict) -> str:
    return (f"{site} dims {p['i']}–{p['j']}: {fmt(p['mm'], 3)} bits (positive rates "
            f"{fmt(p['rate_i'], 2)} / {fmt(p['rate_j'], 2)}, both {fmt(p['both'], 2)})")


def _largest(by_site: dict) -> tuple[str, dict] | None:
    pairs = [(s, r["top_pairs"][0]) for s, r in by_site.items() if r.get("top_pairs")]
    return max(pairs, key=lambda sp: sp[1]["mm"]) if pairs else None


def _mean_row(pos: dict) -> dict:
    n = len(pos)
    mm = [r["mm"]["mean"] for r in pos.values()]
    plug = [r["plugin"]["mean"] for r in pos.values()]
    excess = [r["excess"]["plugin"] for r in pos.values()]
    inside = sum(r["in_paper_range"] for r in pos.values())
    rows = next(iter(pos.values()))["n"]
    return _row("E9: mean pairwise sign MI 0.0004–0.0051 bits (positions)",
                f"Miller-Madow {_span(mm)} over {n} sites (plug-in {_span(plug)})",
                _share(inside, n),
                f"{inside} of {n} sites in range; plug-in bias ≈ 1/(2n ln 2) = "
                f"{fmt(1 / (2 * rows * math.log(2)), 4)} bits at n = {rows}; plug-in excess "
                f"over the shuffled baseline {_span(excess)}")


def _pairs_row(pos: dict) -> dict:
    over = {s: r["mm"]["pairs_over"] for s, r in pos.items() if r["mm"]["pairs_over"]}
    null = max(r["shuffled"]["mm_max"] for r in pos.values())
    why = f"largest: {_pair(*_largest(pos))}; the shuffled baseline's largest pair {fmt(null, 3)}"
    if over and null <= PAIR_LIMIT:
        why += f", so pairs above {PAIR_LIMIT:g} are not sampling noise"
    return _row(f"E9: no pair above {PAIR_LIMIT:g} bits",
                f"{sum(over.values())} pairs above {PAIR_LIMIT:g} at {len(over)} of {len(pos)} "
                "sites", "not reproduced" if over else "reproduced", why)


def _basis_row(pos: dict) -> dict:
    n = len(pos)
    kinds = [r["basis"]["verdict"] for r in pos.values()]
    lower, higher = kinds.count("lower than rotated"), kinds.count("higher than rotated")
    centred = sum(r["centred"]["mm"]["mean"] < r["rotated"]["mm"]["mean"] for r in pos.values())
    return _row("E9 (implied; the paper shows no control): the low MI is a property of the "
                "standard basis",
                f"lower than the rotated control at {lower} of {n} sites, higher at {higher}, "
                f"indistinguishable at {n - lower - higher}", _share(lower, n),
                f"control: centred, unit-variance, Haar-rotated states; a gap beyond "
                f"{SPREAD_Z:g} shuffle SDs counts; the centred data (same thresholds as the "
                f"control, basis only) lie below it at {centred} of {n} sites")


def _type_row(res: dict) -> dict:
    claim = f"E9: type-level mean MI ≈ {PAPER_TYPE_LEVEL} bits (vocabulary signs)"
    tl = res.get("type_level")
    if not tl:
        return _row(claim, "–", "not tested", res.get("type_level_note", "no sign cache"))
    lo, hi = PAPER_TYPE_LEVEL / TYPE_FACTOR, PAPER_TYPE_LEVEL * TYPE_FACTOR
    mm = [r["mm"]["mean"] for r in tl.values()]
    inside = sum(lo <= m <= hi for m in mm)
    over = sum(r["mm"]["pairs_over"] for r in tl.values())
    return _row(claim, f"Miller-Madow {_span(mm, 5)} over {len(tl)} sites, "
                f"{next(iter(tl.values()))['n']:,} tokens", _share(inside, len(tl)),
                f"{inside} of {len(tl)} sites within a factor {TYPE_FACTOR:g} ({fmt(lo, 4)}–"
                f"{fmt(hi, 4)}); {over} type-level pairs above {PAIR_LIMIT:g} bits")


def verdicts(res: dict) -> list[dict]:
    """The four verdict rows of an E9 result: (a) mean MI, (b) type level, (c) no pair above
    0.1 bits, (d) standard basis vs the rotated control."""
    pos = res["position"]
    return [_mean_row(pos), _type_row(res), _pairs_row(pos), _basis_row(pos)]


def _position_table(res: dict) -> list[str]:
    lines = ["## Position level, per site", "",
             "Bits. *shuffled*: Miller-Madow mean of the same states with each dim's rows "
             f"permuted ({res['repeats']} shuffles; ± its SD); *excess*: plug-in mean minus the "
             "shuffled plug-in mean; *centred*: the standardised states, not rotated; *rotated*: "
             "the control; *gap*: data minus rotated (Miller-Madow means) against the rule's "
             "threshold.", "",
             "| site | plug-in mean | Miller-Madow mean | shuffled | excess | max | pairs > "
             f"{PAIR_LIMIT:g} | centred mean | rotated mean | rotated max | gap (threshold) | "
             "basis | in range | constant dims |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in res["position"].items():
        sh, rot, b = r["shuffled"], r["rotated"], r["basis"]
        lines.append(
            f"| {s} | {fmt(r['plugin']['mean'], 4)} | {fmt(r['mm']['mean'], 4)} | "
            f"{fmt(sh['mm_mean'], 5, True)} ± {fmt(sh['mm_mean_sd'], 5)} | "
            f"{fmt(r['excess']['plugin'], 4)} | {fmt(r['mm']['max'], 3)} | {r['mm']['pairs_over']} | "
            f"{fmt(r['centred']['mm']['mean'], 4)} | {fmt(rot['mm']['mean'], 4)} | "
            f"{fmt(rot['mm']['max'], 3)} | {fmt(b['gap'], 4, True)} ({fmt(b['threshold'], 4)}) | "
            f"{b['verdict']} | {'yes' if r['in_paper_range'] else 'no'} | {r['constant_dims']} |")
    return lines


def _type_table(res: dict) -> list[str]:
    tl = res.get("type_level")
    lines = ["## Type level (the sign cache's vocabulary rows), per site", ""]
    if not tl:
        return lines + [f"{res.get('type_level_note', 'Not computed: no sign cache')}.", ""]
    lines += [res.get("type_level_note", ""), "",
              "| site | tokens | plug-in mean | Miller-Madow mean | shuffled | max | pairs > "
              f"{PAIR_LIMIT:g} | constant dims |", "|---|---|---|---|---|---|---|---|"]
    for s, r in tl.items():
        sh = r["shuffled"]
        lines.append(f"| {s} | {r['n']:,} | {fmt(r['plugin']['mean'], 5)} | "
                     f"{fmt(r['mm']['mean'], 5)} | {fmt(sh['mm_mean'], 6, True)} ± "
                     f"{fmt(sh['mm_mean_sd'], 6)} | {fmt(r['mm']['max'], 3)} | "
                     f"{r['mm']['pairs_over']} | {r['constant_dims']} |")
    return lines + [""]


def _top_pairs(title: str, by_site: dict) -> list[str]:
    lines = [f"## Top {len(next(iter(by_site.values()))['top_pairs'])} pairs per site ({title}, "
             "Miller-Madow)", "",
             "`i–j: MI (positive rate of i / of j, both positive)`: a pair that shares much has "
             "a joint rate far from the product of its rates.", ""]
    for s, r in by_site.items():
        lines.append(f"- **{s}**: " + "; ".join(
            f"{p['i']}–{p['j']}: {fmt(p['mm'], 3)} ({fmt(p['rate_i'], 2)} / "
            f"{fmt(p['rate_j'], 2)}, {fmt(p['both'], 2)})" for p in r["top_pairs"]))
    return lines + [""]


def markdown(res: dict) -> str:
    """The whole page."""
    n = res["n_positions"]
    lines = [
        f"# E9: pairwise sign mutual information on {res['model']}", "",
        f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s on the machine that wrote this). "
        f"{n} text positions from {res['n_texts']} packaged Wikipedia leads, {len(res['sites'])} "
        f"sites, seed {res['seed']}.", "",
        "## Verdicts", "",
        "| paper claim | our number | verdict | why |", "|---|---|---|---|",
        *[verdict_row(v) for v in verdicts(res)],
        "",
        "Rules: `experiments/mi_report.py` (page) and `experiments/mi.py` (per site), fixed "
        "before the results. Means are over every pair of dims; a pair with a constant-sign dim "
        "counts as its exact 0.", "",
        *_position_table(res), "",
        *_type_table(res),
        *_top_pairs("positions", res["position"]),
        *(_top_pairs("types", res["type_level"]) if res.get("type_level") else []),
        "## Estimators", "",
        "- Plug-in: MI of the empirical 2x2 sign table, in bits.",
        "- Miller-Madow: plug-in − (K_ab − K_a − K_b + 1) / (2 n ln 2), K = non-empty cells of "
        "the pair's table / sign bins of each dim; removes the plug-in bias 1 / (2 n ln 2) of "
        "independent signs, so it can be slightly negative.",
        "- Shuffled baseline: each dim's rows permuted independently (seeded), keeping every "
        "sign rate and destroying all dependence; its plug-in mean is the bias, its "
        "Miller-Madow mean should be ≈ 0.",
        "- Rotated control: each dim centred and scaled to unit SD, then one Haar rotation "
        "(`bagofdims.stats.random_rotation`, seed as above); signs are then taken around each "
        "rotated dim's mean. The *centred* column has the same thresholds without the rotation.",
        "- Positions of one text are not independent; the shuffle spread treats them as if "
        "they were, so the basis rule's threshold is a lower bound on the noise.", ""]
    return "\n".join(lines)


def write(out_dir: str | Path, res: dict) -> Path:
    """``mi.json`` and ``mi.md`` in ``out_dir``; returns the page's path."""
    return write_report(out_dir, "mi", res, markdown(res))
