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
