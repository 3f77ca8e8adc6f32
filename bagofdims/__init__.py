"""bagofdims: training-free features over the standard basis of transformer hidden states.

>>> import bagofdims as bd
>>> model, tok = bd.load_model("smollm2")
>>> with bd.Capture(model, ["resid.*"]) as cap:
...     model(**tok(["some text"], return_tensors="pt"))
>>> cache = bd.SignCache.build(model, tok, sites=["resid.*", "final"])
"""

from bagofdims.errors import (BagOfDimsError, CacheError, CatalogError, ModelNotAvailable,
                              UnknownSite)
from bagofdims.capture import Capture, StopForward
from bagofdims.hooks import active_hooks, hook_count
from bagofdims.signs.cache import SignCache
from bagofdims.models import EMBEDDED, load_model
from bagofdims.sites import all_sites, resolve
from bagofdims.features.feature import Feature
from bagofdims.features.discovery import DiscoveryConfig, discover, discover_unsupervised
from bagofdims.catalog import Catalog
from bagofdims.steering.interventions import SignFlip, active_interventions, sign_flip
from bagofdims.steering.effects import flip_effect, specificity_matrix
from bagofdims.signs import bits
from bagofdims import stats

__version__ = "0.1.0"

__all__ = [
    "BagOfDimsError",
    "Capture", "StopForward", "active_hooks", "hook_count",
    "SignCache", "CacheError",
    "load_model", "EMBEDDED", "ModelNotAvailable",
    "resolve", "all_sites", "UnknownSite",
    "Feature", "DiscoveryConfig", "discover", "discover_unsupervised",
    "Catalog", "CatalogError", "bits", "stats",
    "sign_flip", "SignFlip", "active_interventions", "flip_effect", "specificity_matrix",
]
