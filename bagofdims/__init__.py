"""bagofdims: training-free features over the standard basis of transformer hidden states.

>>> import bagofdims as bd
>>> model, tok = bd.load_model("smollm2")
>>> with bd.Capture(model, ["resid.*"]) as cap:
...     model(**tok(["some text"], return_tensors="pt"))
>>> cache = bd.SignCache.build(model, tok, sites=["resid.*", "final"])
"""

from .capture import Capture, StopForward, active_hooks, hook_count
from .cache import CacheError, SignCache
from .models import EMBEDDED, ModelNotAvailable, load_model
from .sites import UnknownSite, all_sites, resolve
from .feature import Feature
from .features import DiscoveryConfig, discover, discover_unsupervised
from .catalog import Catalog, CatalogError
from .interventions import SignFlip, active_interventions, sign_flip
from .effects import flip_effect, specificity_matrix
from . import bits, stats

__version__ = "0.1.0"

__all__ = [
    "Capture", "StopForward", "active_hooks", "hook_count",
    "SignCache", "CacheError",
    "load_model", "EMBEDDED", "ModelNotAvailable",
    "resolve", "all_sites", "UnknownSite",
    "Feature", "DiscoveryConfig", "discover", "discover_unsupervised",
    "Catalog", "CatalogError", "bits", "stats",
    "sign_flip", "SignFlip", "active_interventions", "flip_effect", "specificity_matrix",
]
