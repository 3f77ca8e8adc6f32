"""``bagofdims serve`` / ``export-html`` / ``contexts``: the feature browser, live or as static
pages, and its top activating contexts (the one pass that runs the model over a corpus).

    bagofdims serve runs/smollm2/catalog --model smollm2       # http://127.0.0.1:8765
    bagofdims export-html runs/smollm2/catalog out/site        # the same pages, no server
    accelerate launch --multi_gpu --num_processes 4 -m bagofdims contexts runs/smollm2/catalog \
        --model smollm2 --n-docs 20000                          # the contexts, data-parallel
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

from bagofdims.cli.options import check_device, check_positive, flag
from bagofdims.errors import InvalidArgument


@dataclass
class ServeConfig:
    """Browse a catalog in the browser: features, dims, and (with --model) a reader and live steering."""

    catalog: Annotated[tyro.conf.Positional[str], flag(metavar="CATALOG")]
    """Catalog directory (built by `bagofdims catalog`)."""
    model: Annotated[Optional[str], flag("none: no reader or steering", "MODEL")] = None
    """The catalog's model (embedded name, hub id or directory), to read text and steer live."""
    host: str = "127.0.0.1"
    """Address to listen on; the default is reachable from this machine only."""
    port: int = 8765
    """Port to listen on."""
    contexts: bool = True
    """With --model: compute the top activating contexts once if they are missing (stored in the catalog)."""
    corpus: str = "wiki"
    """Text for the contexts: wiki or bbc (packaged); hf:NAME[:CONFIG][@SPLIT][#COLUMN] (a datasets dataset, streamed); a save_to_disk folder or a .parquet/.jsonl/.csv file (@SPLIT, #COLUMN optional); or a file with one text per line."""
    n_docs: int = 200
    """Documents of the corpus to read for the contexts."""
    max_tokens: int = 128
    """Tokens read per document for the contexts."""
    reports: Annotated[Optional[str], flag("none", "DIR")] = None
    """A folder of reports to link from the index."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""


@dataclass
class ExportConfig:
    """Write the browser's index, feature and dim pages as static HTML (no server, no model)."""

    catalog: Annotated[tyro.conf.Positional[str], flag(metavar="CATALOG")]
    """Catalog directory (built by `bagofdims catalog`)."""
    out: Annotated[tyro.conf.Positional[str], flag(metavar="OUT")]
    """Folder to write the site into (open OUT/index.html)."""
    overwrite: bool = False
    """Replace an existing OUT."""
    model: Annotated[Optional[str], flag("none: use contexts already computed", "MODEL")] = None
    """The catalog's model, to compute the top activating contexts first if they are missing."""
    corpus: str = "wiki"
    """Text for the contexts: wiki or bbc (packaged); hf:NAME[:CONFIG][@SPLIT][#COLUMN] (a datasets dataset, streamed); a save_to_disk folder or a .parquet/.jsonl/.csv file (@SPLIT, #COLUMN optional); or a file with one text per line."""
    n_docs: int = 200
    """Documents of the corpus to read for the contexts."""
    max_tokens: int = 128
    """Tokens read per document for the contexts."""
    reports: Annotated[Optional[str], flag("none", "DIR")] = None
    """A folder of reports to copy into the site and link from the index."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""


@dataclass
class ContextsConfig:
    """Compute a catalog's top activating contexts (stored in it, used by serve and export-html); under accelerate launch the processes share the documents."""

    catalog: Annotated[tyro.conf.Positional[str], flag(metavar="CATALOG")]
    """Catalog directory (built by `bagofdims catalog`)."""
    model: Annotated[str, flag(metavar="MODEL")]
    """The catalog's model (embedded name, hub id or directory)."""
    corpus: str = "wiki"
    """Text for the contexts: wiki or bbc (packaged); hf:NAME[:CONFIG][@SPLIT][#COLUMN] (a datasets dataset, streamed); a save_to_disk folder or a .parquet/.jsonl/.csv file (@SPLIT, #COLUMN optional); or a file with one text per line."""
    n_docs: int = 200
    """Documents of the corpus to read."""
    max_tokens: int = 128
    """Tokens read per document."""
    top: int = 5
    """Contexts kept per feature (one per document)."""
    batch_size: int = 8
    """Documents per forward pass (the unit shared between processes and checkpointed)."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""


def contexts(cfg: ContextsConfig) -> None:
    """``bagofdims contexts``: compute (or resume) the contexts; replaces stored ones made with
    other settings."""
    from bagofdims.catalog import Catalog
    from bagofdims.models import load_model
    from bagofdims.parallel import world
    from bagofdims.serve import compute_contexts, parse_corpus

    for name in ("--n-docs", "--max-tokens", "--top", "--batch-size"):
        check_positive(name, getattr(cfg, name[2:].replace("-", "_")))
    device = check_device(cfg.device)
    corpus = parse_corpus(cfg.corpus)
    cat = Catalog.load(cfg.catalog)
    here = world()  # several processes under `accelerate launch`: each reads a share
    model, tok = load_model(cfg.model, device=here.rank_device(device))
    cat.check_model(model)
    texts = corpus.texts(cfg.n_docs)
    found = compute_contexts(cat, model, tok, texts, max_tokens=cfg.max_tokens, top=cfg.top,
                             batch_size=cfg.batch_size, progress=here.is_main, source=corpus.key)
    if found is not None:
        print(f"top contexts of {len(found):,} features from {len(texts):,} documents of "
              f"{corpus.key} -> {cat.path / 'contexts.json'}")


def prepare(cfg, compute: bool = True):
    """``(views, model, tokenizer)`` for a config: the catalog, its tokenizer, the model if asked
    for, and the contexts (computed when missing and a model is given)."""
    from bagofdims.catalog import Catalog
    from bagofdims.models import load_model, load_tokenizer
    from bagofdims.serve import CatalogViews, compute_contexts, load_contexts, parse_corpus
    from bagofdims.serve.contexts import stored_settings

    check_positive("--n-docs", cfg.n_docs)
    check_positive("--max-tokens", cfg.max_tokens)
    device = check_device(cfg.device)
    corpus = parse_corpus(cfg.corpus)  # a bad --corpus is refused before the model loads
    cat = Catalog.load(cfg.catalog)
    model = tok = None
    if cfg.model is not None:
        model, tok = load_model(cfg.model, device=device)
        cat.check_model(model)
        cat.tokenizer = tok
    else:
        cat.tokenizer = load_tokenizer(cat.model_name)
    contexts = load_contexts(cat.path)
    if contexts is None and model is not None and compute:
        texts = corpus.texts(cfg.n_docs)
        contexts = compute_contexts(cat, model, tok, texts, max_tokens=cfg.max_tokens,
                                    source=corpus.key)
    source = (stored_settings(cat.path) or {}).get("source") if contexts is not None else None
    if source is not None and source != corpus.key:
        print(f"note: the stored top activating contexts come from {source}; delete "
              f"{cat.path / 'contexts.json'} to recompute them from {corpus.key}.")
    return CatalogViews(cat, contexts, cfg.reports, contexts_source=source), model, tok


def serve(cfg: ServeConfig) -> None:
    """``bagofdims serve``."""
    import uvicorn

    from bagofdims.serve import create_app

    if not 0 < cfg.port < 65536:
        raise InvalidArgument(f"--port must be 1..65535, got {cfg.port}.")
    views, model, tok = prepare(cfg, compute=cfg.contexts)
    if not _loopback(cfg.host):
        print(f"warning: --host {cfg.host} makes the browser (and live steering) reachable from "
              "other machines; it has no authentication.")
    print(f"bagofdims browser: http://{cfg.host}:{cfg.port}/  ({len(views.cat)} features"
          f"{', model ' + cfg.model if model is not None else ', no model: no reader or steering'})"
          " - Ctrl-C stops it")
    uvicorn.run(create_app(views, model, tok), host=cfg.host, port=cfg.port, log_level="warning")


def export_html(cfg: ExportConfig) -> None:
    """``bagofdims export-html``."""
    from bagofdims.serve import export_site

    views, _, _ = prepare(cfg)
    out = export_site(views, cfg.out, overwrite=cfg.overwrite)
    print(f"{len(views.cat)} feature pages -> {out}/index.html"
          f"{'' if views.contexts else ' (no top activating contexts: pass --model to compute them)'}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
