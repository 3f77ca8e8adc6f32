"""What each page shows, computed from a catalog (and its cache) once and kept.

Everything here is plain data (dicts, lists, floats) for the templates, so the live server and
the static export render the same thing. Vocabulary-wide numbers read only the feature's own
bit columns of the packed cache (``[V, k]`` rather than ``[V, width]``), so a feature page costs
milliseconds even for a 50k-token vocabulary.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from collections import defaultdict
from functools import lru_cache

import torch

from bagofdims.errors import BagOfDimsError, NotFound, OutOfRange

REPORT_SUFFIXES = (".html", ".md", ".pdf", ".png", ".svg", ".txt", ".json")

# metric key -> label shown on the feature page (other keys are shown by name)
METRIC_LABELS = {
    "held_out_auc": "held-out members vs the vocabulary",
    "hard_auc": "held-out members vs other categories' members (hard negatives)",
    "anchor_auc": "anchors vs the vocabulary (training set; for reference)",
    "mean_dim_auc": "mean per-dim AUC on the anchors (chooses the best site)",
    "null_auc": "random-anchor null",
    "random_auc": "random tokens",
    "embed_auc": "the embedding's own signs",
}


def _num(x) -> float:
    return float(x) if x is not None else float("nan")


def margin_label(f) -> str:
    """What :func:`margin` is measured against, said plainly."""
    return "margin above the catalog's null" if "null_auc" in f.metrics else \
        "margin above chance (0.5; the catalog stores no null)"


def margin(f) -> float:
    """Held-out AUC above the null (``null_auc`` when the catalog has it, else chance 0.5)."""
    return _num(f.metrics.get("held_out_auc")) - _num(f.metrics.get("null_auc", 0.5))


def bit_columns(packed: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """``bool [n, k]``: the sign bit (``value > 0``) of each dim in ``dims`` for every packed row."""
    dims = dims.to(torch.int64)
    byte = packed[:, dims // 8].to(torch.int64)
    return ((byte >> (dims % 8)) & 1).bool()


def agreement(packed: torch.Tensor, dims: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``float [n]``: fraction of a feature's dims whose sign agrees, for every packed row."""
    if len(dims) == 0:
        return torch.zeros(packed.shape[0])
    return (bit_columns(packed, dims) == (signs > 0)).float().mean(-1)


class CatalogViews:
    """Page data for one catalog; safe to share across threads (results are memoised)."""

    def __init__(self, cat, contexts: dict | None = None, reports_dir=None,
                 contexts_source: str | None = None):
        self.cat = cat
        self.contexts = contexts or {}
        self.contexts_source = contexts_source  # the corpus they were read from, when known
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        if self.reports_dir is not None and not self.reports_dir.is_dir():
            raise NotFound(f"--reports {reports_dir}: no such directory; pass the folder the "
                           "report scripts wrote (e.g. runs/MODEL/reports).")
        self.reports = sorted(p.name for p in self.reports_dir.iterdir()
                              if p.suffix in REPORT_SUFFIXES) if self.reports_dir else []
        self._lock = threading.Lock()
        self._by_name: dict[str, list] = defaultdict(list)
        for f in cat.features:
            self._by_name[f.name].append(f)
        self._best = {name: cat.get(name).index for name in self._by_name}
        self._index = None
        self.feature = lru_cache(maxsize=4096)(self._feature)
        self.dim = lru_cache(maxsize=4096)(self._dim)

    # -- index -------------------------------------------------------------------------------
    def index(self) -> dict:
        """Rows of every feature plus per-site counts (computed once)."""
        with self._lock:
            if self._index is None:
                self._index = self._make_index()
            return self._index

    def _make_index(self) -> dict:
        rows = []
        for f in self.cat.features:
            words = [w.strip() for w in f.anchor_words + f.held_out_words if w.strip()]
            rows.append({
                "i": f.index, "name": f.name, "site": f.site, "site_order": self.cat.sites.index(f.site),
                "size": len(f), "auc": _num(f.metrics.get("held_out_auc")),
                "hard": _num(f.metrics.get("hard_auc")), "margin": margin(f),
                "best": self._best[f.name] == f.index,
                "search": " ".join([f.name.lower(), *(w.lower() for w in words),
                                    *(str(int(d)) for d in f.dims)]),
                "words": ", ".join(words[:6]),
            })
        counts = [(s, len(self.cat.at(s))) for s in self.cat.sites]
        return {"rows": rows, "counts": counts, "n_names": len(self._by_name),
                "reports": self.reports,
                "skipped": sorted(self.cat.meta.skipped.items())}

    # -- feature -----------------------------------------------------------------------------
    def find(self, i: int):
        if not 0 <= i < len(self.cat.features):
            raise NotFound(f"No feature {i} in this catalog (it has {len(self.cat.features)}, "
                           f"0..{len(self.cat.features) - 1}); pick one from the index.")
        return self.cat.features[i]

    def _feature(self, i: int, k: int = 20) -> dict:
        f = self.find(i)
        metrics = [{"key": key, "label": METRIC_LABELS.get(key, key.replace("_", " ")),
                    "value": float(v), "ci": _ci(f.metrics, key)}
                   for key, v in f.metrics.items() if not key.endswith(("_lo", "_hi"))]
        layers = [{"site": g.site, "i": g.index, "auc": _num(g.metrics.get("held_out_auc")),
                   "hard": _num(g.metrics.get("hard_auc")), "here": g.index == f.index}
                  for g in sorted(self._by_name[f.name], key=lambda g: self.cat.sites.index(g.site))]
        page = {"f": f, "i": i, "metrics": metrics, "layers": layers,
                "dims": [(int(d), int(s)) for d, s in zip(f.dims, f.signs)],
                "best": self._best[f.name] == f.index, "margin": margin(f),
                "margin_label": margin_label(f), "contexts": self.contexts.get(str(i)),
                "contexts_source": self.contexts_source,
                "nearest": self._nearest(f)}
        page.update(self._vocab_view(f, k))
        return page

    def _vocab_view(self, f, k: int) -> dict:
        """Top tokens by agreement, held-out members hit and missed (needs cache + tokenizer)."""
        try:
            cache, tok = self.cat.cache, self.cat.tokenizer
        except BagOfDimsError as err:  # no cache or tokenizer: the page says why, the rest shows
            return {"vocab_error": str(err), "top": [], "hit": [], "missed": []}
        packed = torch.as_tensor(cache.packed(f.site))
        s = agreement(packed, f.dims, f.signs)
        top = s.topk(min(k, len(s)))
        ids = cache.token_ids[top.indices].tolist()
        out = {"top": [(tok.decode([t]), float(v)) for t, v in zip(ids, top.values.tolist())],
               "hit": [], "missed": [], "vocab_error": None}
        if f.held_out:
            held = cache.rows(f.held_out)
            thr = f.threshold if f.threshold is not None else 1.0
            for tid, w, score in zip(f.held_out, f.held_out_words, s[held].tolist()):
                (out["hit"] if score >= thr else out["missed"]).append((w.strip() or repr(w), score))
        return out

    def _nearest(self, f, k: int = 8) -> list[dict]:
        """Features at the same site sharing the most dims (and how many with the same sign)."""
        mine = dict(zip(f.dims.tolist(), f.signs.tolist()))
        out = []
        for g in self.cat.at(f.site):
            if g.index == f.index:
                continue
            shared = [d for d in g.dims.tolist() if d in mine]
            if not shared:
                continue
            theirs = dict(zip(g.dims.tolist(), g.signs.tolist()))
            same = sum(mine[d] == theirs[d] for d in shared)
            out.append({"i": g.index, "name": g.name, "shared": len(shared), "same": same,
                        "jaccard": len(shared) / len(set(mine) | set(theirs))})
        return sorted(out, key=lambda r: -r["jaccard"])[:k]

    # -- dim ---------------------------------------------------------------------------------
    def _dim(self, site: str, dim: int, k: int = 12) -> dict:
        if site not in self.cat.sites:
            raise NotFound(f"Site '{site}' is not in this catalog; its sites are "
                           f"{', '.join(self.cat.sites)}.")
        width = _width(self.cat, site)
        if not 0 <= dim < width:
            raise OutOfRange(f"dim {dim} is outside {site}, which has {width} dims (0..{width - 1}).")
        users = [{"i": f.index, "name": f.name, "sign": s}
                 for f, s in self.cat.features_of_dim(site, dim)]
        page = {"site": site, "dim": dim, "width": width, "users": users, "categories": [],
                "explain": None, "vocab_error": None}
        try:
            cache = self.cat.cache
            page["explain"] = self.cat.explain_dim(site, dim, k=k)
        except BagOfDimsError as err:  # no cache or tokenizer: say why on the page
            page["vocab_error"] = str(err)
            return page
        col = bit_columns(torch.as_tensor(cache.packed(site)), torch.tensor([dim]))[:, 0]
        page["positive_rate"] = float(col.float().mean())
        cats = []
        for g in self.cat.at(site):
            members = list(dict.fromkeys([*g.anchors, *g.held_out]))
            if not members:
                continue
            pos = float(col[cache.rows(members)].float().mean())
            sign = 1 if pos >= 0.5 else -1
            cats.append({"i": g.index, "name": g.name, "sign": sign,
                         "agree": pos if sign > 0 else 1 - pos, "n": len(members)})
        page["categories"] = sorted(cats, key=lambda r: -r["agree"])[:k]
        return page

    def site_width(self, site: str) -> int:
        return _width(self.cat, site)


def _width(cat, site: str) -> int:
    for f in cat.at(site):
        if f.width is not None:
            return int(f.width)
    return int(cat.cache.width(site))


def _ci(metrics: dict, key: str) -> tuple[float, float] | None:
    lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return float(lo), float(hi)
