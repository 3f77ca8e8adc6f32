"""The Feature dataclass: a set of dimensions at one site plus the sign each should have."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from bagofdims.checks import as_indices
from bagofdims.errors import InvalidArgument, InvalidType


@dataclass
class Feature:
    """A sign-pattern feature ``(D_c, pi_c)`` at one site.

    Only ``name``, ``site``, ``dims`` and ``signs`` are needed (a hand-made feature); discovery
    fills the rest. ``dims`` are int64 indices into the site's width, ``signs`` are ±1 (int8).
    A token's score is the fraction of ``dims`` whose sign matches ``signs``.
    """

    name: str
    site: str
    dims: torch.Tensor | list[int]
    signs: torch.Tensor | list[int]
    dim_auc: torch.Tensor | list[float] | None = None  # per-dim AUC on the anchors
    anchors: list[int] = field(default_factory=list)  # token ids that defined it
    anchor_words: list[str] = field(default_factory=list)
    held_out: list[int] = field(default_factory=list)  # token ids kept for evaluation
    held_out_words: list[str] = field(default_factory=list)
    method: str = "manual"  # how dims were chosen: manual, topk, tau, null
    params: dict = field(default_factory=dict)  # the method's settings (k, tau, ...)
    threshold: float | None = None  # score at which the feature "fires" (see catalog)
    metrics: dict = field(default_factory=dict)  # evaluation numbers (held-out AUC, ...)
    width: int | None = None  # the site's width, when known
    model: str | None = None  # the model it belongs to, when known
    index: int | None = None  # position in its catalog (stable id model/site/index)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.site, str):
            raise InvalidType(f"Feature name and site must be strings, got {self.name!r}, {self.site!r}.")
        self.dims = as_indices(self.dims, f"Feature '{self.name}': dims")
        self.signs = torch.as_tensor(self.signs).reshape(-1).cpu()
        if self.signs.is_floating_point():
            if not bool(torch.isfinite(self.signs).all()):
                raise InvalidArgument(f"Feature '{self.name}': signs must be +1 or -1, not NaN/inf.")
            self.signs = torch.sign(self.signs)
        self.signs = self.signs.to(torch.int8)
        if len(self.dims) != len(self.signs):
            raise InvalidArgument(
                f"Feature '{self.name}': {len(self.dims)} dims but {len(self.signs)} signs; give "
                "one sign (+1 or -1) per dimension."
            )
        if len(self.signs) and not bool(((self.signs == 1) | (self.signs == -1)).all()):
            raise InvalidArgument(f"Feature '{self.name}': signs must be +1 or -1.")
        if len(self.dims) and int(self.dims.min()) < 0:
            raise InvalidArgument(f"Feature '{self.name}': dims must be non-negative indices.")
        if len(torch.unique(self.dims)) != len(self.dims):
            raise InvalidArgument(f"Feature '{self.name}': dims contain duplicates.")
        if self.width is not None and len(self.dims) and int(self.dims.max()) >= self.width:
            raise InvalidArgument(
                f"Feature '{self.name}': dim {int(self.dims.max())} is out of range for site "
                f"{self.site} of width {self.width} (valid: 0..{self.width - 1})."
            )
        if self.dim_auc is not None:
            self.dim_auc = torch.as_tensor(self.dim_auc, dtype=torch.float32).reshape(-1).cpu()

    def __len__(self) -> int:
        return len(self.dims)

    @property
    def id(self) -> str:
        """Stable id ``model/site/index`` (Neuronpedia style) once the feature is in a catalog."""
        return f"{self.model or '?'}/{self.site}/{self.index if self.index is not None else '?'}"

    def check_width(self, width: int) -> None:
        """Raise if a dim does not exist at a site of this width."""
        if len(self.dims) and int(self.dims.max()) >= width:
            raise InvalidArgument(
                f"Feature '{self.name}' uses dim {int(self.dims.max())} but site {self.site} has "
                f"width {width}; the feature belongs to another model or site."
            )

    def dense(self, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """``[width]`` vector: the sign on each feature dim, 0 elsewhere."""
        self.check_width(width)
        out = torch.zeros(width, dtype=dtype, device=device)
        out[self.dims.to(out.device)] = self.signs.to(device=out.device, dtype=dtype)
        return out

    def score(self, states: torch.Tensor) -> torch.Tensor:
        """Fraction of the feature's dims whose sign agrees, for states ``[..., width]``."""
        if len(self.dims) == 0:
            raise InvalidArgument(f"Feature '{self.name}' has no dims; nothing to score.")
        self.check_width(states.shape[-1])
        picked = states[..., self.dims.to(states.device)]
        agree = (picked > 0) == (self.signs.to(states.device) > 0)
        return agree.float().mean(-1)

    def __repr__(self) -> str:
        extra = f", held-out AUC {self.metrics['held_out_auc']:.3f}" if "held_out_auc" in self.metrics else ""
        return f"Feature({self.name!r}, {self.site}, {len(self)} dims, {self.method}{extra})"
