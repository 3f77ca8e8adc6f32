"""``bagofdims activations``: hidden states of a text file or dataset, sharded to disk (resumable).

    bagofdims activations --model smollm2 --sites resid.10 --texts docs.txt --out runs/acts
    bagofdims activations --texts hf:wikitext:wikitext-103-raw-v1@train#text --limit 100000 ...
    accelerate launch --multi_gpu --num_processes 4 -m bagofdims activations ...   # 4 processes
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

from bagofdims.cli.options import check_device, check_positive, flag
from bagofdims.errors import BagOfDimsError, InvalidArgument, MissingFile
from bagofdims.parallel import is_main_process

DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")  # read as datasets, not as lines


@dataclass
class ActivationsConfig:
    """Capture the hidden states of texts (a file with one per line, or a dataset) to sharded
    safetensors."""

    texts: Annotated[str, flag(metavar="SRC", aliases=("--dataset",))]
    """The texts: a text file (one per line, blank lines skipped); a .parquet/.jsonl/.csv file or a
    save_to_disk folder (@SPLIT, #COLUMN optional); hf:NAME[:CONFIG][@SPLIT][#COLUMN], a datasets
    dataset streamed from the hub (only the first --limit texts are read); or wiki / bbc (packaged)."""
    out: Annotated[str, flag(metavar="DIR")]
    """Output directory; rerunning the same command resumes an interrupted run."""
    model: Annotated[str, flag(metavar="MODEL")] = "smollm2"
    """Embedded model (smollm2, gemma3-270m, minilm), Hugging Face id, or local model directory."""
    sites: list[str] = field(default_factory=lambda: ["resid.*"])
    """Site names or globs, e.g. resid.10 k.3 (list them with `bagofdims sites`)."""
    limit: Annotated[Optional[int], flag("all; required for hf:", "N")] = None
    """Use only the first N texts (datasets skip empty texts)."""
    batch_size: int = 8
    """Documents per forward pass."""
    max_length: int = 256
    """Truncate each document to this many tokens."""
    shard_tokens: int = 32768
    """Close a shard at the first batch end past this many tokens: the unit of resume, and of
    sharing under several processes (`accelerate launch`)."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""
    overwrite: bool = False
    """Replace a store in --out written with other texts or settings (else it is resumed)."""


def read_texts(path: str, limit: int | None = None) -> list[str]:
    """The texts of ``--texts``: the non-blank lines of a UTF-8 text file, or the first ``limit``
    non-empty texts of a dataset (see :mod:`bagofdims.serve.corpus`)."""
    if limit is not None:
        check_positive("--limit", limit)
    p = Path(path)
    if p.is_file() and p.suffix.lower() not in DATA_SUFFIXES:
        lines = p.read_text(encoding="utf-8").splitlines()
        texts = [line.rstrip("\n") for line in lines if line.strip()][:limit]
        if not texts:
            raise InvalidArgument(f"--texts {path} has no non-blank line; put one document per "
                                  "line.")
        return texts
    from bagofdims.text import SOURCES

    spec = str(path)
    if not (p.exists() or spec.startswith("hf:") or spec in SOURCES or "@" in spec or "#" in spec):
        raise MissingFile(f"--texts {path}: no such file; pass a UTF-8 text file with one "
                          "document per line, a data file or folder, or hf:NAME (a dataset).")
    from bagofdims.serve.corpus import parse_corpus

    try:
        corpus = parse_corpus(spec)
        if corpus.kind == "hub" and limit is None:
            raise InvalidArgument(f"--texts {spec} is streamed from the hub, and may be larger "
                                  "than the disk; pass --limit N to read its first N texts.")
        return corpus.texts(limit or sys.maxsize)
    except BagOfDimsError as err:  # the corpus reader names its flag --corpus
        raise type(err)(str(err).replace("--corpus", "--texts")) from None


def write_activations(cfg: ActivationsConfig, model=None, tok=None):
    """Capture and write the states of ``cfg``; returns the :class:`ActivationStore` (every
    process of a multi-process run returns it, once the main process has listed every shard)."""
    from bagofdims.models import load_model
    from bagofdims.parallel import world
    from bagofdims.stream import ActivationStore
    from bagofdims.stream import write_activations as write

    check_positive("--batch-size", cfg.batch_size)
    check_positive("--max-length", cfg.max_length)
    check_positive("--shard-tokens", cfg.shard_tokens)
    device = check_device(cfg.device)
    texts = read_texts(cfg.texts, cfg.limit)
    here = world()  # several processes under `accelerate launch`: each writes a share
    if model is None:
        model, tok = load_model(cfg.model, device=here.rank_device(device))
    write(model, tok, texts, cfg.sites, cfg.out, batch_size=cfg.batch_size,
          max_length=cfg.max_length, shard_tokens=cfg.shard_tokens, overwrite=cfg.overwrite,
          progress=here.is_main)
    return ActivationStore(cfg.out)


def activations(cfg: ActivationsConfig) -> None:
    """``bagofdims activations``."""
    store = write_activations(cfg)
    if is_main_process():
        print(f"{store.n_tokens:,} tokens, sites {', '.join(store.sites)} -> {cfg.out}")
