"""Rendering: one Jinja environment and one set of templates for the live server and the export.

Links are made by :class:`Links`: the live server uses absolute paths (``/feature/3``), the
static export relative file names (``../feature/3.html``) so the site opens from any folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bagofdims.serve.charts import layer_chart, score_bar
from bagofdims.serve.steering import SWEEP_TOKENS
from bagofdims.steering.effects import DEGRADE_FACTOR, MAX_SWEEP, SWEEP_STRENGTHS

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class Links:
    """URLs of every page, live (``static=False``) or as files relative to ``depth`` folders down."""

    def __init__(self, static: bool = False, depth: int = 0):
        self.static = static
        self.root = "../" * depth if static else "/"

    def index(self) -> str:
        return self.root + ("index.html" if self.static else "")

    def feature(self, i: int) -> str:
        return f"{self.root}feature/{int(i)}" + (".html" if self.static else "")

    def dim(self, site: str, dim: int) -> str:
        return f"{self.root}dim/{quote(site)}/{int(dim)}" + (".html" if self.static else "")

    def reader(self, **query) -> str:
        base = self.root + ("reader.html" if self.static else "reader")
        return base + ("?" + urlencode(query) if query and not self.static else "")

    def steer(self, **query) -> str:
        base = self.root + ("steer.html" if self.static else "steer")
        return base + ("?" + urlencode(query) if query and not self.static else "")

    def report(self, name: str) -> str:
        return f"{self.root}reports/{quote(name)}"

    def asset(self, name: str) -> str:
        return f"{self.root}static/{name}"


def _fmt(value, digits: int = 3) -> str:
    """A number for display; NaN / missing show as an en dash."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _sign(s: int) -> str:
    return "+" if s > 0 else "−"


def _token(text: str) -> str:
    """A token made visible: leading spaces as '␣', newlines as '⏎'."""
    return text.replace("\n", "⏎").replace(" ", "␣") if text.strip() != text or not text else text


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, sign=_sign, token=_token)
    env.globals.update(layer_chart=layer_chart, score_bar=score_bar)
    return env


class Pages:
    """Renders every page from :class:`~bagofdims.serve.views.CatalogViews` data."""

    def __init__(self, views, live_model: bool = False):
        self.views = views
        self.env = environment()
        self.live_model = live_model  # reader and steer need a model the server holds

    def _render(self, name: str, links: Links, title: str, **ctx) -> str:
        return self.env.get_template(name).render(
            links=links, title=title, model=self.views.cat.model_name, static=links.static,
            live_model=self.live_model, sites=self.views.cat.sites, **ctx)

    def index(self, links: Links) -> str:
        return self._render("index.html", links, "Features", **self.views.index())

    def feature(self, i: int, links: Links) -> str:
        page = self.views.feature(i)
        return self._render("feature.html", links, f"{page['f'].name} at {page['f'].site}", **page)

    def dim(self, site: str, dim: int, links: Links) -> str:
        page = self.views.dim(site, dim)
        return self._render("dim.html", links, f"{site} dim {dim}", **page)

    def reader(self, links: Links, **ctx) -> str:
        ctx.setdefault("text", "")
        ctx.setdefault("site", None)
        ctx.setdefault("rows", None)
        ctx.setdefault("error", None)
        return self._render("reader.html", links, "Reader", **ctx)

    def steer(self, links: Links, **ctx) -> str:
        ctx.setdefault("form", {})
        ctx.setdefault("error", None)
        ctx.setdefault("stream", None)
        ctx.setdefault("sweep", None)
        return self._render("steer.html", links, "Steer", names=self.views.cat.names,
                            default_strengths=", ".join(f"{s:g}" for s in SWEEP_STRENGTHS),
                            max_sweep=MAX_SWEEP, sweep_tokens=SWEEP_TOKENS,
                            factor=DEGRADE_FACTOR, **ctx)

    def error(self, links: Links, message: str, status: int) -> str:
        return self._render("error.html", links, "Error", message=message, status=status)
