"""The ``bagofdims`` command line; each command's config dataclass also drives the Python API,
e.g. ``build_cache(CacheConfig(model="smollm2", sites=["resid.*"]))``."""

from bagofdims.cli.activations import ActivationsConfig, write_activations
from bagofdims.cli.cache import CacheConfig, InfoConfig, SitesConfig, build_cache, list_sites, summary
from bagofdims.cli.query import CatalogConfig, QueryConfig, build_catalog, load_catalog
from bagofdims.cli.steer import SteerConfig, format_result, steer

__all__ = [
    "ActivationsConfig", "CacheConfig", "CatalogConfig", "InfoConfig", "QueryConfig",
    "SitesConfig", "SteerConfig", "build_cache", "build_catalog", "format_result", "list_sites",
    "load_catalog", "steer", "summary", "write_activations",
]
