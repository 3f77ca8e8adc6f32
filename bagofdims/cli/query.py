"""``bagofdims catalog`` / ``query``: discover category features from a sign cache; look them up.

    bagofdims catalog --model smollm2                 # runs/smollm2/cache -> runs/smollm2/catalog
    bagofdims query runs/smollm2/catalog country      # or: --dim 17 --site resid.3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from bagofdims.cli.options import check_positive, flag, run_dir
from bagofdims.errors import AlreadyExists, InvalidArgument, NotFound, OutOfRange

DEFAULT_MODEL = "smollm2"


@dataclass
class CatalogConfig:
    """Discover one feature per category at each site of a sign cache, and save the catalog."""

    model: Annotated[Optional[str], flag("smollm2, or the model of --cache", "MODEL")] = None
    """Model whose catalog this is; names the default --cache and --out directories."""
    cache: Annotated[Optional[str], flag("runs/MODEL/cache", "DIR")] = None
    """Sign cache directory to read (built by `bagofdims capture`)."""
    out: Annotated[Optional[str], flag("runs/MODEL/catalog", "DIR")] = None
    """Catalog directory to write."""
    categories: str = "default"
    """Shipped category set, or a JSON file ({name: [words]}); labels for an example cache."""
    sites: list[str] = field(default_factory=lambda: ["resid.*"])
    """Cached sites (names or globs) to discover features at."""
    method: Literal["topk", "tau", "null"] = "topk"
    """How dims are chosen: the k best, all above an AUC threshold, or above a random-anchor null."""
    k: Annotated[int, flag(aliases=("-k",))] = 32
    """Dims per feature (topk)."""
    tau: float = 0.75
    """Per-dim AUC threshold (tau)."""
    n_anchors: Annotated[Optional[float], flag("50 words; 0.5 of an example category", "N")] = None
    """Anchor words per category (the rest are held out for evaluation); for an example cache a
    count of groups (or examples), or a fraction of them below 1."""
    n_min_held_out: int = 10
    """Fewest held-out members a category needs to be evaluated (else it is skipped and listed)."""
    forms: Literal["initial", "both", "bare"] = "initial"
    """Member tokens: after a space (initial), with or without it (both), or without (bare)."""
    overwrite: bool = False
    """Replace an existing catalog in --out."""


def build_catalog(cfg: CatalogConfig, tokenizer=None):
    """Build and save the catalog of ``cfg``; returns it (``tokenizer``: default, the cache's model's)."""
    return _build(cfg, tokenizer)[0]


def _build(cfg: CatalogConfig, tokenizer=None):
    from bagofdims.catalog import Catalog
    from bagofdims.features.discovery import DiscoveryConfig
    from bagofdims.models import load_tokenizer
    from bagofdims.signs.cache import SignCache

    check_positive("-k", cfg.k)
    n_anchors = cfg.n_anchors
    if n_anchors is not None:
        check_positive("--n-anchors", n_anchors)
        n_anchors = int(n_anchors) if n_anchors >= 1 else n_anchors
        if n_anchors >= 1 and n_anchors != cfg.n_anchors:
            raise InvalidArgument(f"--n-anchors {cfg.n_anchors}: give a whole count, or a "
                                  "fraction below 1 (example caches).")
    check_positive("--n-min-held-out", cfg.n_min_held_out)
    discovery = DiscoveryConfig(method=cfg.method, k=cfg.k, tau=cfg.tau)  # checks tau
    cache = SignCache.load(cfg.cache or run_dir(cfg.model or DEFAULT_MODEL, "cache"))
    kind = "inputs-catalog" if cache.is_examples else "catalog"  # beside runs/MODEL/inputs-cache
    out = Path(cfg.out or run_dir(cfg.model or cache.model_name, kind))
    if out.exists() and not cfg.overwrite:
        raise AlreadyExists(f"{out} exists; pass --overwrite to replace it, or choose another --out.")
    if cache.is_examples:  # categories are labels: no tokenizer involved
        categories = "labels" if cfg.categories == "default" else cfg.categories
    else:
        categories = cfg.categories
        if isinstance(n_anchors, float):
            raise InvalidArgument(f"--n-anchors {n_anchors}: a vocabulary cache takes a count of "
                                  "anchor words (a fraction is for example caches).")
        tokenizer = tokenizer or load_tokenizer(cache.model_name)
    cat = Catalog.build(cache, categories=categories, sites=cfg.sites, tokenizer=tokenizer,
                        config=discovery, n_anchors=n_anchors,
                        n_min_held_out=cfg.n_min_held_out, forms=cfg.forms)
    cat.save(out, overwrite=cfg.overwrite)
    return cat, out


def catalog(cfg: CatalogConfig) -> None:
    """``bagofdims catalog``."""
    import statistics

    cat, out = _build(cfg)
    print(f"{cat!r} -> {out}")
    print_subset(cat)
    for site in cat.sites:
        feats = cat.at(site)
        aucs = [f.metrics["held_out_auc"] for f in feats]
        hard = [f.metrics["hard_auc"] for f in feats]
        line = (f"  {site:10s} median held-out AUC {statistics.median(aucs):.3f}   "
                f"vs other categories {statistics.median(hard):.3f}")
        if "null_listed_auc" in feats[0].metrics:
            above = sum(f.metrics["p_listed"] < 0.05 for f in feats)
            line += (f"   random listed words {feats[0].metrics['null_listed_auc']:.3f}   "
                     f"above it (p < 0.05) {above}/{len(feats)}")
        print(line)


@dataclass
class QueryConfig:
    """Show a feature of a catalog (by name or search text), or explain one dimension."""

    catalog: Annotated[tyro.conf.Positional[str], flag(metavar="CATALOG")]
    """Catalog directory."""
    name: Annotated[tyro.conf.Positional[str], flag("none", "[NAME]")] = ""
    """Feature name, or text to search names and member words for."""
    site: Annotated[Optional[str], flag("the feature's best site; the first site for --dim", "SITE")] = None
    """Site to read the feature (or --dim) at."""
    dim: Annotated[Optional[int], flag("none", "DIM")] = None
    """Explain this dimension instead: tokens most positive and negative on it, features using it."""
    k: Annotated[int, flag(aliases=("-k",))] = 12
    """Tokens (or examples) to show."""


def print_subset(cat) -> None:
    """Say so when the catalog's numbers come from a subset cache (and which population)."""
    from bagofdims.signs.subset import describe

    sub = cat.meta.subset
    if sub:
        print(f"  subset cache: {describe(sub, sub['vocab_size'])}")
        print(f"  (AUCs are against these cached tokens, not the whole vocabulary; the random-token "
              f"null drew from {sub['token_null']})")


def load_catalog(path: str):
    """A catalog with its model's tokenizer (the catalog never loads one itself)."""
    from bagofdims.catalog import Catalog
    from bagofdims.models import load_tokenizer

    cat = Catalog.load(path)
    if cat.meta.examples:  # rows are examples, named by index, label and source
        return cat
    cat.tokenizer = load_tokenizer(cat.model_name)  # checked against the catalog's fingerprint
    return cat


def check_site(cat, site: str | None) -> None:
    """Refuse a site the catalog has no features at, listing the ones it has."""
    if site is not None and site not in cat.sites:
        raise NotFound(f"--site {site}: this catalog has no features there; its sites are "
                       f"{', '.join(cat.sites)}.")


def find_feature(cat, name: str, site: str | None):
    """The feature ``name`` at ``site`` (its best site if None), else the first search hit there.

    Returns ``(feature, other matches)``; ``other matches`` is empty for an exact name.
    """
    if name in cat.names:
        return cat.get(name, site), []
    hits = cat.search(name)
    if not hits:
        raise NotFound(f"No feature named or containing '{name}' in this catalog; names: "
                       f"{', '.join(cat.names[:20])}{' ...' if len(cat.names) > 20 else ''}.")
    return cat.get(hits[0].name, site), hits


def query(cfg: QueryConfig) -> None:
    """``bagofdims query``."""
    check_positive("-k", cfg.k)
    if cfg.dim is None and not cfg.name:
        raise InvalidArgument("pass a feature NAME (e.g. `query DIR country`) or --dim D.")
    cat = load_catalog(cfg.catalog)
    check_site(cat, cfg.site)
    if cfg.dim is not None:
        return _explain(cat, cfg.site or cat.sites[0], cfg.dim, cfg.k)
    f, hits = find_feature(cat, cfg.name, cfg.site)
    if hits:
        print(f"no feature named '{cfg.name}'; matches: {', '.join(h.name for h in hits[:10])}")
    m = f.metrics
    nan = float("nan")
    print(f"{f.name}  [{f.id}]  {len(f)} dims at {f.site}  ({f.method}, {f.params.get('k')})")
    print(f"  held-out AUC {m.get('held_out_auc', nan):.3f}   vs other categories "
          f"{m.get('hard_auc', nan):.3f}   mean per-dim AUC {m.get('mean_dim_auc', nan):.3f}   "
          f"fires at >= {f.threshold:.3f}")
    if "held_out_auc_lo" in m:
        print(f"  {cat.meta.evidence.get('level', 0.95):.0%} CI (held-out members) "
              f"[{m['held_out_auc_lo']:.3f}, {m['held_out_auc_hi']:.3f}]   null medians: random "
              f"tokens {m['null_token_auc']:.3f}, random listed words {m['null_listed_auc']:.3f} "
              f"(p = {m['p_listed']:.3f})")
    print_subset(cat)
    dims = ", ".join(f"{int(d)}{'+' if s > 0 else '-'}" for d, s in zip(f.dims[:16], f.signs[:16]))
    print(f"  dims   {dims}{' ...' if len(f) > 16 else ''}")
    print(f"  anchors  {' '.join(w.strip() for w in f.anchor_words[:12])} ...")
    if cat.meta.examples:
        from bagofdims.cli.inputs import print_top_examples

        return print_top_examples(cat, f.name, f.site, cfg.k)
    top = cat.top_tokens(f.name, k=cfg.k, site=f.site)
    among = f" (of the {cat.meta.subset['n_tokens']:,} cached)" if cat.meta.subset else ""
    print(f"  top tokens{among}  " + "  ".join(f"{t.strip()!s}:{s:.2f}" for t, s in top))


def _explain(cat, site: str, dim: int, k: int) -> None:
    width = cat.cache.width(site)
    if not 0 <= dim < width:
        raise OutOfRange(f"--dim {dim} is outside {site}, which has {width} dims (0..{width - 1}).")
    ex = cat.explain_dim(site, dim, k=k)
    rows = "examples" if cat.meta.examples else \
        f"{cat.meta.subset['n_tokens']:,} cached subset tokens" if cat.meta.subset else "vocabulary"
    print(f"{site} dim {dim}: positive on {ex['positive_rate']:.1%} of the {rows}")
    if cat.meta.examples:
        from bagofdims.cli.inputs import example_source

        for sign in ("positive", "negative"):
            print(f"  most {'+' if sign == 'positive' else '-'}")
            for text in ex[f"most_{sign}"]:  # "#ROW label/group", see catalog.examples.describe
                print(f"    {text}  {example_source(cat, int(text.split()[0][1:]))}")
    else:
        print(f"  most +  {' '.join(repr(t) for t in ex['most_positive'])}")
        print(f"  most -  {' '.join(repr(t) for t in ex['most_negative'])}")
    if ex["ranked_by"] == "value":
        print("  (ranked by value)")
    else:
        print("  (ranked by typicality: agreement of each token's signs with the mean sign "
              "difference between the dim's + and - tokens; a cache built with --magnitudes "
              "ranks by value)")
    print(f"  in features: {', '.join(f'{n} ({s:+d})' for n, s in ex['features']) or 'none'}")
