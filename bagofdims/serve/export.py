"""The static export: the index, every feature page and the dim pages of every used dim, as
plain HTML files that open from disk (relative links, the package's CSS/JS copied along).

The reader and steering pages need a live model; the export writes them as pages that say so.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from bagofdims.serve.pages import STATIC, Links, Pages
from bagofdims.storage import atomic_dir

log = logging.getLogger(__name__)


def export_site(views, out, overwrite: bool = False, progress: bool = True) -> Path:
    """Write the site for :class:`~bagofdims.serve.views.CatalogViews` ``views`` into ``out``
    (atomically: a failed export leaves no half-written folder)."""
    pages = Pages(views, live_model=False)
    cat = views.cat
    dims = sorted({(f.site, int(d)) for f in cat.features for d in f.dims.tolist()},
                  key=lambda sd: (cat.sites.index(sd[0]), sd[1]))

    def fill(tmp: Path) -> None:
        shutil.copytree(STATIC, tmp / "static")
        if views.reports:
            (tmp / "reports").mkdir()
            for name in views.reports:
                shutil.copy2(views.reports_dir / name, tmp / "reports" / name)
        top = Links(static=True, depth=0)
        (tmp / "index.html").write_text(pages.index(top), encoding="utf-8")
        (tmp / "reader.html").write_text(pages.reader(top), encoding="utf-8")
        (tmp / "steer.html").write_text(pages.steer(top), encoding="utf-8")
        (tmp / "feature").mkdir()
        one_down = Links(static=True, depth=1)
        for f in tqdm(cat.features, desc="feature pages", unit="page", disable=not progress):
            (tmp / "feature" / f"{f.index}.html").write_text(pages.feature(f.index, one_down),
                                                             encoding="utf-8")
        two_down = Links(static=True, depth=2)
        for site, d in tqdm(dims, desc="dim pages", unit="page", disable=not progress):
            folder = tmp / "dim" / site
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{d}.html").write_text(pages.dim(site, d, two_down), encoding="utf-8")

    path = atomic_dir(Path(out), fill, overwrite)
    log.info("exported %d feature pages and %d dim pages to %s", len(cat.features), len(dims), path)
    return path
