"""Inline SVG charts rendered on the server (no JavaScript, no CDN, same in the static export).

Series differ by line style and marker shape as well as colour, and every chart carries a text
title and a table-like ``<desc>``, so nothing is encoded by colour alone.
"""

from __future__ import annotations

import math
from html import escape

from markupsafe import Markup


def layer_chart(layers: list[dict], width: int = 640, height: int = 260) -> Markup:
    """Held-out AUC (solid, circles) and hard-negative AUC (dashed, squares) across sites.

    ``layers``: ``[{"site", "auc", "hard", "here"}]`` in site order; the current site is ringed.
    """
    if not layers:
        return Markup("")
    left, right, top, bottom = 64, 12, 14, 76  # room for tilted site names and the legend
    pw, ph = width - left - right, height - top - bottom
    vals = [v for r in layers for v in (r["auc"], r["hard"]) if math.isfinite(v)]
    lo = min([0.5, *vals]) if vals else 0.5
    lo = math.floor(lo * 10) / 10
    n = len(layers)

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + ph * (1 - (v - lo) / (1 - lo or 1))

    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-labelledby="lc-title lc-desc">',
             '<title id="lc-title">AUC of this category at each site</title>',
             '<desc id="lc-desc">' + escape("; ".join(
                 f"{r['site']}: held-out {r['auc']:.3f}, hard {r['hard']:.3f}" for r in layers))
             + "</desc>"]
    for t in [lo + (1 - lo) * j / 4 for j in range(5)]:
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>')
    if lo < 0.5 <= 1:
        parts.append(f'<line class="chance" x1="{left}" x2="{left + pw}" y1="{y(0.5):.1f}" '
                     f'y2="{y(0.5):.1f}"/><text class="tick" x="{left + pw}" y="{y(0.5) - 3:.1f}" '
                     'text-anchor="end">chance</text>')
    step = max(1, math.ceil(n / 16))  # at most ~16 site labels
    for i, r in enumerate(layers):
        if i % step == 0 or r["here"]:
            parts.append(f'<text class="tick" x="{x(i):.1f}" y="{top + ph + 16}" text-anchor="end" '
                         f'transform="rotate(-35 {x(i):.1f} {top + ph + 16})">{escape(r["site"])}</text>')
    for key, cls in (("hard", "hard"), ("auc", "auc")):
        pts = [(x(i), y(r[key])) for i, r in enumerate(layers) if math.isfinite(r[key])]
        if len(pts) > 1:
            parts.append(f'<polyline class="{cls}" points="' +
                         " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            parts.append(f'<circle class="auc" cx="{a:.1f}" cy="{b:.1f}" r="3.5"/>' if cls == "auc" else
                         f'<rect class="hard" x="{a - 3:.1f}" y="{b - 3:.1f}" width="6" height="6"/>')
    for i, r in enumerate(layers):
        if r["here"] and math.isfinite(r["auc"]):
            parts.append(f'<circle class="here" cx="{x(i):.1f}" cy="{y(r["auc"]):.1f}" r="8"/>')
    parts.append(f'<g class="legend" transform="translate({left},{height - 16})">'
                 '<line class="auc" x1="0" x2="18" y1="6" y2="6"/><circle class="auc" cx="9" cy="6" r="3"/>'
                 '<text x="24" y="10">held-out AUC</text>'
                 '<line class="hard" x1="120" x2="138" y1="6" y2="6"/>'
                 '<rect class="hard" x="126" y="3" width="6" height="6"/>'
                 '<text x="144" y="10">vs other categories</text>'
                 '<circle class="here" cx="290" cy="6" r="6"/><text x="300" y="10">this site</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def score_bar(value: float, width: int = 80) -> Markup:
    """A small horizontal bar for a 0..1 score, with the number beside it (not colour only)."""
    v = 0.0 if not math.isfinite(value) else min(max(value, 0.0), 1.0)
    return Markup(f'<span class="bar" aria-hidden="true"><span style="width:{v * width:.0f}px">'
                  f'</span></span> {value:.2f}')


def _nice_max(v: float) -> float:
    """The smallest of 1, 2, 5 × 10^k at or above ``v``."""
    if not v > 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    return next(m * e for m in (1, 2, 5, 10) if m * e >= v)


def sweep_chart(rows: list[dict], factor: float = 2.0, width: int = 640, height: int = 280) -> Markup:
    """Perplexity (solid, log scale, left axis) and the concept's next-token mass (dashed,
    diamonds, right axis) at each strength of a sweep.

    ``rows``: :func:`~bagofdims.steering.effects.strength_sweep` rows, the baseline first. The
    baseline's perplexity and ``factor`` times it are horizontal reference lines; degraded
    strengths are drawn as squares (circles otherwise) and the first one is ringed.
    """
    base = rows[0] if rows and rows[0]["strength"] is None else None
    pts = [r for r in rows if r["strength"] is not None]
    if base is None:
        return Markup("")
    left, right, top, bottom = 64, 64, 14, 62
    pw, ph = width - left - right, height - top - bottom
    ppls = [r["ppl"] for r in rows if r["ppl"] is not None and math.isfinite(r["ppl"]) and r["ppl"] > 0]
    b = base["ppl"] if base["ppl"] and math.isfinite(base["ppl"]) else 1.0
    lo = math.log10(min([*ppls, b]) / 1.25)
    hi = math.log10(max([*ppls, factor * b]) * 1.25)
    masses = [r["mass"] for r in rows if r.get("mass") is not None]
    mtop = _nice_max(max(masses)) if masses else 1.0
    n = max(len(pts), 1)

    def x(i: int) -> float:
        return left + pw * (i + 0.5) / n

    def y(v: float) -> float:
        return top + ph * (1 - (math.log10(v) - lo) / ((hi - lo) or 1))

    def ym(v: float) -> float:
        return top + ph * (1 - v / mtop)

    def desc(r: dict) -> str:
        m = "–" if r.get("mass") is None else f"{r['mass']:.3f}"
        return (f"strength {r['strength']:g}: perplexity {r['ppl']:.1f}"
                f"{' (degraded)' if r['degraded'] else ''}, mass {m}")

    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" aria-labelledby="sw-title sw-desc">',
             '<title id="sw-title">Perplexity of the continuation and concept mass at each '
             'strength</title>',
             '<desc id="sw-desc">' + escape(f"baseline perplexity {b:.1f}; " +
                                            "; ".join(desc(r) for r in pts)) + "</desc>"]
    for j in range(5):  # log-spaced ticks on the left, linear ones on the right
        t = 10 ** (lo + (hi - lo) * j / 4)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" '
                     f'y2="{y(t):.1f}"/><text class="tick" x="{left - 6}" y="{y(t) + 4:.1f}" '
                     f'text-anchor="end">{t:.3g}</text>'
                     f'<text class="tick" x="{left + pw + 6}" y="{ym(mtop * j / 4) + 4:.1f}">'
                     f'{mtop * j / 4:.3g}</text>')
    parts.append(f'<text class="tick" x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + ph / 2:.1f})">perplexity (log)</text>'
                 f'<text class="tick" x="{width - 10}" y="{top + ph / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(90 {width - 10} {top + ph / 2:.1f})">concept mass</text>')
    for v, cls, label in ((b, "chance", "baseline"), (factor * b, "limit", f"{factor:g}× baseline")):
        parts.append(f'<line class="{cls}" x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" '
                     f'y2="{y(v):.1f}"/><text class="tick" x="{left + 4}" y="{y(v) - 3:.1f}">'
                     f'{label}</text>')
    for i, r in enumerate(pts):
        parts.append(f'<text class="tick" x="{x(i):.1f}" y="{top + ph + 16}" '
                     f'text-anchor="middle">{r["strength"]:g}</text>')
    parts.append(f'<text class="tick" x="{left + pw / 2:.1f}" y="{top + ph + 32}" '
                 'text-anchor="middle">strength</text>')
    good = [(x(i), y(r["ppl"]), r) for i, r in enumerate(pts) if r["ppl"] and math.isfinite(r["ppl"])]
    if len(good) > 1:
        parts.append('<polyline class="auc" points="' +
                     " ".join(f"{a:.1f},{c:.1f}" for a, c, _ in good) + '"/>')
    mpts = [(x(i), ym(r["mass"])) for i, r in enumerate(pts) if r.get("mass") is not None]
    if len(mpts) > 1:
        parts.append('<polyline class="hard" points="' +
                     " ".join(f"{a:.1f},{c:.1f}" for a, c in mpts) + '"/>')
    for a, c in mpts:
        parts.append(f'<path class="hard mass" d="M{a:.1f},{c - 4:.1f} l4,4 l-4,4 l-4,-4 z"/>')
    ringed = False
    for a, c, r in good:
        if r["degraded"]:
            parts.append(f'<rect class="degraded" x="{a - 4:.1f}" y="{c - 4:.1f}" width="8" height="8"/>')
            if not ringed:
                parts.append(f'<circle class="here" cx="{a:.1f}" cy="{c:.1f}" r="9"/>')
                ringed = True
        else:
            parts.append(f'<circle class="auc" cx="{a:.1f}" cy="{c:.1f}" r="3.5"/>')
    parts.append(f'<g class="legend" transform="translate({left},{height - 14})">'
                 '<line class="auc" x1="0" x2="18" y1="6" y2="6"/><circle class="auc" cx="9" cy="6" r="3"/>'
                 '<text x="24" y="10">perplexity</text>'
                 '<rect class="degraded" x="100" y="2" width="8" height="8"/>'
                 f'<text x="114" y="10">above {factor:g}× baseline</text>'
                 '<line class="hard" x1="250" x2="268" y1="6" y2="6"/>'
                 '<path class="hard mass" d="M259,2 l4,4 l-4,4 l-4,-4 z"/>'
                 '<text x="274" y="10">concept mass</text>'
                 '<circle class="here" cx="390" cy="6" r="6"/><text x="400" y="10">degrades here</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))
