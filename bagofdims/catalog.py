"""Catalog: named sign-pattern features with their evaluation, persisted and queryable.

On disk a catalog is a directory (written atomically): ``catalog.json`` (model, cache
fingerprint, discovery settings, and per feature: name, site, source, threshold, anchors,
held-out members, metrics) and ``features.safetensors`` (``dims`` int64, ``signs`` int8 and
``dim_auc`` float32, all features concatenated, with ``offsets`` int64 [n + 1]).

Stable ids are ``model/site/index``. ``cat[name]`` is the category's feature at its best site,
chosen by the mean per-dim AUC on the anchors (never by held-out numbers).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from bagofdims.signs import bits
from bagofdims.features.evaluation import evaluate_prototypes
from bagofdims.features.feature import Feature
from bagofdims.features.discovery import DiscoveryConfig, discover_rows, positive_rates
from bagofdims.inputs import TextStart
from bagofdims.storage import atomic_dir, open_mmap
from bagofdims.errors import CatalogError, NotFound, OutOfRange

FORMAT_VERSION = 1



class Catalog:
    """Features (one per category and site) plus the query API."""

    def __init__(self, features: list[Feature], meta: dict, cache=None, tokenizer=None):
        self.features = features
        self.meta = meta
        self._cache = cache
        self._tokenizer = tokenizer
        self._model = None
        for i, f in enumerate(features):
            f.index = i
            f.model = meta.get("model")

    # -- build ------------------------------------------------------------------------------
    @classmethod
    def build(cls, cache, categories="default", sites=("resid.*",), tokenizer=None,
              config: DiscoveryConfig | None = None, n_anchors: int = 50, n_min_held_out: int = 10,
              seed: int = 0, progress: bool = True, forms: str = "initial") -> Catalog:
        """Discover one feature per usable category at every matching site of ``cache``.

        ``categories``: a shipped set name, a JSON path, or a dict ``name -> words``. Members are
        mapped to single tokens of the model's tokenizer (``forms``: ``"initial"`` = the token
        after a space, ``"both"`` = with or without it, ``"bare"``; see
        :func:`bagofdims.categories.single_token_forms`); categories with too few are reported
        in ``meta["skipped"]`` (and printed), never dropped silently.
        """
        from bagofdims.categories import load_categories, map_categories

        config = config or DiscoveryConfig()
        tokenizer = tokenizer or _load_tok(cache)
        cache.check(tokenizer=tokenizer)
        mapped, skipped = map_categories(load_categories(categories), tokenizer,
                                         n_anchors=n_anchors, n_min_held_out=n_min_held_out,
                                         seed=seed, forms=forms)
        in_cache = set(cache.token_ids.tolist())
        mapped = [m for m in mapped if set(m.anchors) <= in_cache and set(m.held_out) <= in_cache]
        if not mapped:
            raise CatalogError("No category has enough single-token members for this tokenizer.")
        if skipped and progress:
            print(f"catalog: {len(skipped)} categories skipped (too few single tokens), "
                  f"{len(mapped)} used; see catalog.meta['skipped'].")
        site_list = _match_sites(cache, sites)
        anchor_rows = [cache.rows(m.anchors) for m in mapped]
        held_rows = [cache.rows(m.held_out) for m in mapped]
        features: list[Feature] = []
        for site in tqdm(site_list, desc="catalog", unit="site", disable=not progress):
            packed, d = cache.packed(site), cache.width(site)
            found = discover_rows(packed, d, anchor_rows, config, positive_rates(packed, d))
            ev = evaluate_prototypes(packed, d, [(f[0], f[1]) for f in found], anchor_rows, held_rows)
            for c, (m, (dims, signs, auc, params)) in enumerate(zip(mapped, found)):
                metrics = {k: float(v[c]) for k, v in ev.items() if k != "threshold"}
                metrics["mean_dim_auc"] = float(auc.mean()) if len(auc) else float("nan")
                features.append(Feature(
                    name=m.name, site=site, dims=dims, signs=signs, dim_auc=auc,
                    anchors=m.anchors, anchor_words=m.anchor_words, held_out=m.held_out,
                    held_out_words=m.held_out_words, method=config.method, params=params,
                    threshold=float(ev["threshold"][c]), metrics=metrics, width=d))
        meta = {
            "format_version": FORMAT_VERSION, "model": cache.model_name,
            "weights": cache.meta["weights"], "tokenizer": cache.meta["tokenizer"],
            "cache": str(cache.path) if cache.path else None, "sites": site_list,
            "config": asdict(config), "categories": categories if isinstance(categories, str) else "custom",
            "n_anchors": n_anchors, "forms": forms, "skipped": skipped,
            "bos_id": cache.meta.get("bos_id"),
        }
        return cls(features, meta, cache=cache, tokenizer=tokenizer)

    # -- access -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.features))

    @property
    def sites(self) -> list[str]:
        return list(self.meta["sites"])

    @property
    def model_name(self) -> str:
        return self.meta["model"]

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self):
        return iter(self.features)

    def __repr__(self) -> str:
        return (f"Catalog(model={self.model_name!r}, {len(self.names)} names, "
                f"{len(self.features)} features, sites={len(self.sites)})")

    def get(self, name: str, site: str | None = None) -> Feature:
        """The feature ``name`` at ``site`` (default: its best site by anchor AUC)."""
        cands = [f for f in self.features if f.name == name]
        if not cands:
            close = self.search(name)[:5]
            hint = f" Did you mean {[f.name for f in close]}?" if close else ""
            raise NotFound(f"No feature named '{name}' in this catalog.{hint}")
        if site is None:
            return max(cands, key=lambda f: f.metrics.get("mean_dim_auc", 0.0))
        for f in cands:
            if f.site == site:
                return f
        raise NotFound(f"'{name}' has no feature at {site}; sites: {[f.site for f in cands]}.")

    def __getitem__(self, key) -> Feature:
        if isinstance(key, int):
            return self.features[key]
        if isinstance(key, tuple):
            return self.get(*key)
        if key.count("/") == 2:  # stable id model/site/index
            return self.features[int(key.rsplit("/", 1)[1])]
        return self.get(key)

    def at(self, site: str) -> list[Feature]:
        """All features at one site."""
        return [f for f in self.features if f.site == site]

    def search(self, text: str) -> list[Feature]:
        """Best-site features whose name or member words contain ``text`` (case-insensitive)."""
        q = text.lower().strip()
        hits = []
        for name in self.names:
            f = self.get(name)
            words = [w.strip().lower() for w in f.anchor_words + f.held_out_words]
            if q in name.lower() or any(q == w or q in w for w in words):
                hits.append(f)
        return sorted(hits, key=lambda f: (q not in f.name.lower(), f.name))

    # -- cache-backed queries ---------------------------------------------------------------
    @property
    def cache(self):
        if self._cache is None:
            from bagofdims.signs.cache import SignCache

            if not self.meta.get("cache"):
                raise CatalogError("This catalog has no cache attached; pass cache= to load().")
            self._cache = SignCache.load(self.meta["cache"])
            self._check_cache(self._cache)
        return self._cache

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = _load_tok(self.cache)
        return self._tokenizer

    def _text(self, ids) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def scores(self, site: str, features: list[Feature] | None = None) -> torch.Tensor:
        """``[n_tokens, k]`` prototype scores of every cached token for features at ``site``."""
        feats = features if features is not None else self.at(site)
        w = bits.feature_matrix([(f.dims, f.signs) for f in feats], self.cache.width(site))
        return bits.feature_scores(self.cache.packed(site), w)

    def top_tokens(self, name: str, k: int = 20, site: str | None = None) -> list[tuple[str, float]]:
        """Vocabulary tokens with the highest agreement with a feature."""
        f = self.get(name, site)
        s = self.scores(f.site, [f])[:, 0]
        top = s.topk(min(k, len(s)))
        return list(zip(self._text(self.cache.token_ids[top.indices]), top.values.tolist()))

    def features_of_dim(self, site: str, dim: int) -> list[tuple[Feature, int]]:
        """Features at ``site`` that use ``dim``, with the sign each wants there."""
        out = []
        for f in self.at(site):
            hit = (f.dims == dim).nonzero()
            if len(hit):
                out.append((f, int(f.signs[hit[0, 0]])))
        return out

    def explain_dim(self, site: str, dim: int, k: int = 10) -> dict:
        """Tokens most positive and most negative on a dim (needs magnitudes for a ranking;
        else a sample of each sign), and the features it belongs to."""
        width = self.cache.width(site)
        if not 0 <= dim < width:
            raise OutOfRange(f"dim {dim} is out of range for {site} (width {width}).")
        if self.cache.meta.get("magnitudes"):
            col = self.cache.magnitudes(site)[:, dim].float()
            sign = self.cache.signs(site)[:, dim].float()
            v = col * sign
            pos, neg = v.topk(k).indices, (-v).topk(k).indices
        else:
            sign = self.cache.signs(site)[:, dim]
            pos = (sign > 0).nonzero()[:k, 0]
            neg = (sign < 0).nonzero()[:k, 0]
        return {
            "site": site, "dim": dim, "ranked": bool(self.cache.meta.get("magnitudes")),
            "positive_rate": float((self.cache.signs(site)[:, dim] > 0).float().mean()),
            "most_positive": self._text(self.cache.token_ids[pos]),
            "most_negative": self._text(self.cache.token_ids[neg]),
            "features": [(f.name, s) for f, s in self.features_of_dim(site, dim)],
        }

    def read(self, text: str, site: str | None = None, model=None, top: int = 3) -> list[dict]:
        """Run ``text`` through the model; per token, the features that fire at ``site``.

        A feature fires on a token when its score reaches the feature's threshold (the 99th
        percentile of non-member vocabulary tokens). The text follows the start token the
        cache put before each vocabulary token (``meta["bos_id"]``), if any, so no text token
        sits at the position-0 attention sink; that start token is not listed.
        """
        from bagofdims.capture import Capture

        site = site or self.sites[len(self.sites) // 2]
        feats = self.at(site)
        if not feats:
            raise NotFound(f"No features at {site}; this catalog has sites {self.sites}.")
        model = model or self._load_model()
        tok = self.tokenizer
        ids, lead = TextStart(tok, self.meta.get("bos_id"))(tok(text)["input_ids"])
        x = torch.tensor([ids], device=next(model.parameters()).device)
        with torch.no_grad(), Capture(model, [site], stop=True) as cap:
            cap.run(input_ids=x, attention_mask=torch.ones_like(x))
        states = cap[site][0, lead:]
        w = bits.feature_matrix([(f.dims, f.signs) for f in feats], states.shape[-1])
        s = bits.feature_scores(states.float().cpu(), w)
        thr = torch.tensor([f.threshold if f.threshold is not None else 1.0 for f in feats])
        out = []
        for t, tid in enumerate(ids[lead:]):
            fire = (s[t] >= thr).nonzero()[:, 0]
            ranked = sorted(((feats[j].name, float(s[t, j])) for j in fire.tolist()),
                            key=lambda x: -x[1])[:top]
            out.append({"token": tok.decode([tid]), "features": ranked})
        return out

    def _load_model(self):
        if self._model is None:
            from bagofdims.models import load_model

            self._model, tok = load_model(self.model_name)
            self._tokenizer = self._tokenizer or tok
            self.check_model(self._model)
        return self._model

    # -- checks -----------------------------------------------------------------------------
    def _check_cache(self, cache) -> None:
        if cache.meta["weights"] != self.meta["weights"] or cache.meta["tokenizer"] != self.meta["tokenizer"]:
            raise CatalogError(
                f"This catalog belongs to model '{self.model_name}' (weights {self.meta['weights']}); "
                f"the cache given is of '{cache.model_name}' (weights {cache.meta['weights']}). "
                "Use the cache the catalog was built from, or rebuild the catalog."
            )

    def check_model(self, model) -> None:
        """Raise unless ``model`` is the one this catalog was built for."""
        from bagofdims.models import weight_fingerprint

        if weight_fingerprint(model) != self.meta["weights"]:
            raise CatalogError(
                f"This catalog belongs to model '{self.model_name}' (weights "
                f"{self.meta['weights']}), not to the model given. Load '{self.model_name}' or "
                "rebuild the catalog from a cache of this model."
            )

    # -- save / load ------------------------------------------------------------------------
    def save(self, path, overwrite: bool = False) -> Path:
        """Write ``catalog.json`` + ``features.safetensors`` atomically."""
        sizes = [len(f) for f in self.features]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        cat = lambda xs, dt: np.concatenate([np.asarray(x, dtype=dt) for x in xs]) if xs else np.zeros(0, dt)  # noqa: E731
        tensors = {
            "offsets": offsets,
            "dims": cat([f.dims.numpy() for f in self.features], np.int64),
            "signs": cat([f.signs.numpy() for f in self.features], np.int8),
            "dim_auc": cat([f.dim_auc.numpy() if f.dim_auc is not None else np.full(len(f), np.nan)
                            for f in self.features], np.float32),
        }
        records = []
        for f in self.features:
            rec = {k: getattr(f, k) for k in ("name", "site", "anchors", "anchor_words", "held_out",
                                              "held_out_words", "method", "params", "threshold",
                                              "metrics", "width")}
            rec["id"] = f.id
            records.append(rec)

        def fill(tmp: Path) -> None:
            save_file(tensors, str(tmp / "features.safetensors"))
            (tmp / "catalog.json").write_text(json.dumps({"meta": self.meta, "features": records}))

        return atomic_dir(path, fill, overwrite)

    @classmethod
    def load(cls, path, cache=None, model=None) -> Catalog:
        """Load a catalog; refuses a ``cache`` or ``model`` that is not the one it was built for."""
        path = Path(path)
        if not (path / "catalog.json").exists():
            raise CatalogError(
                f"{path} is not a catalog (no catalog.json). Build one with "
                "`bagofdims catalog --cache DIR --out DIR` or Catalog.build(cache).save(DIR)."
            )
        try:
            data = json.loads((path / "catalog.json").read_text())
            arrays = open_mmap(path / "features.safetensors")
        except (json.JSONDecodeError, OSError, ValueError) as err:
            raise CatalogError(f"{path} is corrupt ({err}); rebuild the catalog.") from err
        meta = data["meta"]
        if meta.get("format_version") != FORMAT_VERSION:
            raise CatalogError(f"{path}: catalog format {meta.get('format_version')} is not "
                               f"{FORMAT_VERSION}; rebuild it.")
        off = np.asarray(arrays["offsets"])
        if len(off) != len(data["features"]) + 1 or off[-1] != len(arrays["dims"]):
            raise CatalogError(f"{path}: features.safetensors does not match catalog.json; rebuild.")
        feats = []
        for i, rec in enumerate(data["features"]):
            sl = slice(int(off[i]), int(off[i + 1]))
            rec = {k: v for k, v in rec.items() if k != "id"}
            feats.append(Feature(dims=np.asarray(arrays["dims"][sl]), signs=np.asarray(arrays["signs"][sl]),
                                 dim_auc=np.asarray(arrays["dim_auc"][sl]), **rec))
        cat = cls(feats, meta, cache=None)
        if cache is not None:
            cat._check_cache(cache)
            cat._cache = cache
        if model is not None:
            cat.check_model(model)
        return cat


def _load_tok(cache):
    from bagofdims.models import load_tokenizer

    return load_tokenizer(cache.model_name)


def _match_sites(cache, patterns) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    out = [s for s in cache.sites if any(fnmatch.fnmatchcase(s, p) for p in patterns)]
    if not out:
        raise NotFound(f"No cached site matches {list(patterns)}; the cache has {cache.sites}.")
    return out
