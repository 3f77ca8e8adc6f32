"""Trained probes: the yardstick for training-free sign-prototype features.

- LogisticProbe: L2 logistic regression, many one-vs-rest categories trained as one batched problem.
- MLPProbe: one-hidden-layer ReLU probes, batched over categories, with early stopping.
- cross_validate: per-category out-of-fold AUC against the whole vocabulary (anchors train only).
- sign_agreement / mass_on_dims / axis_alignment: how well trained weights match a prototype.
- compare_to_catalog: probes vs a catalog's prototypes on its held-out protocol (ProbeReport).
"""

from ._auc import rank_auc
from .alignment import AxisAlignment, axis_alignment, mass_on_dims, sign_agreement
from .compare import ProbeReport, compare_to_catalog, vocab_states
from .cv import CVResult, cross_validate
from .logistic import LogisticProbe, sklearn_C
from .mlp import MLPProbe

__all__ = [
    "AxisAlignment",
    "CVResult",
    "LogisticProbe",
    "MLPProbe",
    "ProbeReport",
    "axis_alignment",
    "compare_to_catalog",
    "cross_validate",
    "mass_on_dims",
    "rank_auc",
    "sign_agreement",
    "sklearn_C",
    "vocab_states",
]
