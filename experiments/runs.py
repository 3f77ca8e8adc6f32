"""Where an experiment reads and writes (the run folder of a model, its sign cache, the rule
that picks the report folder) and how it runs as a command (:func:`entry`).

Reports go to ``<runs>/<model>/reports`` by default, so a run never overwrites the tracked
reports under ``reports/``; ``write_reports=True`` (``--write-reports``) writes ``reports/<model>``
(how the shipped reports are regenerated), and ``out`` (``--out DIR``) names any folder.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bagofdims.errors import BagOfDimsError, InvalidArgument
from bagofdims.signs.cache import SignCache

__all__ = ["REPORTS", "RunConfig", "entry", "load_or_build_cache", "model_tag", "output_dir"]

log = logging.getLogger(__name__)

REPORTS = Path("reports")  # the tracked reports; commands run from the repository root


def model_tag(model: str) -> str:
    """Folder name of a model: an embedded name as it is, else the last part of the id or path
    (``HuggingFaceTB/SmolLM2-135M`` -> ``SmolLM2-135M``), so a path never escapes ``runs/``."""
    tag = Path(str(model).rstrip("/\\")).name
    if not tag or tag in (".", ".."):
        raise InvalidArgument(f"cannot name a run folder after model {model!r}; pass a model "
                              "name, hub id or a directory with a name.")
    return tag


def output_dir(model: str, out: str | Path | None = None, write_reports: bool = False,
               runs: str | Path = "runs") -> Path:
    """The report folder: ``out`` when given, ``reports/<model>`` with ``write_reports``, else
    ``<runs>/<model>/reports``."""
    if out is not None and write_reports:
        raise InvalidArgument("give either --out DIR or --write-reports (which means --out "
                              f"{REPORTS / model_tag(model)}), not both.")
    if out is not None:
        return Path(out)
    if write_reports:
        return REPORTS / model_tag(model)
    return Path(runs) / model_tag(model) / "reports"


@dataclass
class RunConfig:
    """Flags every experiment shares: the model and where its run and report folders are."""

    model: str = "smollm2"
    """embedded model name, Hugging Face id or local model directory"""
    runs: str = "runs"
    """folder of run artefacts: <runs>/<model>/cache, catalog, reports"""
    out: str | None = None
    """report folder (default: <runs>/<model>/reports; reports/<model> with --write-reports)"""
    write_reports: bool = False
    """write the tracked reports under reports/<model> instead of the run folder"""

    @property
    def run_dir(self) -> Path:
        return Path(self.runs) / model_tag(self.model)

    @property
    def out_dir(self) -> Path:
        return output_dir(self.model, self.out, self.write_reports, self.runs)


def load_or_build_cache(model, tokenizer, path: str | Path, sites, tokens=None):
    """The sign cache at ``path``, checked against ``model`` / ``tokenizer``; built there first
    (resumable through a ``<path>.partial`` checkpoint) when missing."""
    path = Path(path)
    if (path / "meta.json").exists():
        return SignCache.load(path, model=model, tokenizer=tokenizer)
    log.info("building the sign cache at %s", path)
    cache = SignCache.build(model, tokenizer, sites=list(sites), tokens=tokens,
                            checkpoint=path.with_name(path.name + ".partial"))
    cache.save(path)
    return SignCache.load(path)


def entry(main, argv=None) -> int:
    """Run an experiment's ``main`` as a command: a refusal (:class:`BagOfDimsError`) is one
    line on stderr and exit status 2, Ctrl-C one line and 130; ``BAGOFDIMS_DEBUG=1`` keeps the
    traceback. Anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for package in ("bagofdims", "experiments"):
        logging.getLogger(package).setLevel(logging.INFO)
    debug = os.environ.get("BAGOFDIMS_DEBUG", "") not in ("", "0")
    prog = os.path.basename(sys.argv[0])
    try:
        main(argv)
    except BagOfDimsError as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted (a sign cache build resumes when rerun)", file=sys.stderr)
        return 130
    return 0
