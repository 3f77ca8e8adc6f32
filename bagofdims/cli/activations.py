"""``bagofdims activations``: hidden states of a text file, sharded to disk (resumable).

    bagofdims activations --model smollm2 --sites resid.10 --texts docs.txt --out runs/acts
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from bagofdims.cli.options import check_device, check_positive, flag
from bagofdims.errors import InvalidArgument, MissingFile


@dataclass
class ActivationsConfig:
    """Capture the hidden states of a text file (one document per line) to sharded safetensors."""

    texts: Annotated[str, flag(metavar="FILE")]
    """Text file, one document per line (blank lines are skipped)."""
    out: Annotated[str, flag(metavar="DIR")]
    """Output directory; rerunning the same command resumes an interrupted run."""
    model: Annotated[str, flag(metavar="MODEL")] = "smollm2"
    """Embedded model (smollm2, gemma3-270m, minilm), Hugging Face id, or local model directory."""
    sites: list[str] = field(default_factory=lambda: ["resid.*"])
    """Site names or globs, e.g. resid.10 k.3 (list them with `bagofdims sites`)."""
    batch_size: int = 8
    """Documents per forward pass."""
    max_length: int = 256
    """Truncate each document to this many tokens."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""
    overwrite: bool = False
    """Replace a store in --out written with other texts or settings (else it is resumed)."""


def read_texts(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    p = Path(path)
    if not p.is_file():
        raise MissingFile(f"--texts {path}: no such file; pass a UTF-8 text file with one "
                          "document per line.")
    texts = [line.rstrip("\n") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise InvalidArgument(f"--texts {path} has no non-blank line; put one document per line.")
    return texts


def write_activations(cfg: ActivationsConfig, model=None, tok=None):
    """Capture and write the states of ``cfg``; returns the :class:`ActivationStore`."""
    from bagofdims.models import load_model
    from bagofdims.stream import ActivationStore
    from bagofdims.stream import write_activations as write

    check_positive("--batch-size", cfg.batch_size)
    check_positive("--max-length", cfg.max_length)
    device = check_device(cfg.device)
    texts = read_texts(cfg.texts)
    if model is None:
        model, tok = load_model(cfg.model, device=device)
    write(model, tok, texts, cfg.sites, cfg.out, batch_size=cfg.batch_size,
          max_length=cfg.max_length, overwrite=cfg.overwrite)
    return ActivationStore(cfg.out)


def activations(cfg: ActivationsConfig) -> None:
    """``bagofdims activations``."""
    store = write_activations(cfg)
    print(f"{store.n_tokens:,} tokens, sites {', '.join(store.sites)} -> {cfg.out}")
