"""The ``bagofdims`` command: one subcommand per config dataclass (flags = its fields).

    bagofdims capture --model smollm2 --sites 'resid.*' final      # -> runs/smollm2/cache
    bagofdims info runs/smollm2/cache
    bagofdims sites --model smollm2 -v
    bagofdims activations --model smollm2 --sites resid.10 --texts docs.txt --out runs/acts
    bagofdims catalog --model smollm2                                # -> runs/smollm2/catalog
    bagofdims query runs/smollm2/catalog country
    bagofdims capture --model DIR --inputs data/clips   # examples: SRC/<label>/<file> -> inputs-cache
    bagofdims steer --model smollm2 --feature fruit --prompt "My favourite fruit is"
    bagofdims serve runs/smollm2/catalog --model smollm2            # http://127.0.0.1:8765
    bagofdims export-html runs/smollm2/catalog out/site
    bagofdims contexts runs/smollm2/catalog --model smollm2 --n-docs 2000   # for serve/export-html
"""

from __future__ import annotations

import sys

from bagofdims.cli.activations import ActivationsConfig, activations
from bagofdims.cli.cache import CacheConfig, InfoConfig, SitesConfig, capture, info, sites
from bagofdims.cli.query import CatalogConfig, QueryConfig, catalog, query
from bagofdims.cli.steer import SteerConfig, run_steer
from bagofdims.cli.serve import ContextsConfig, ExportConfig, ServeConfig, contexts, export_html, serve
from bagofdims.cli.app import Table, run

COMMANDS: Table = {
    "capture": (CacheConfig, capture, "build the sign cache of a model"),
    "info": (InfoConfig, info, "describe a sign cache on disk"),
    "sites": (SitesConfig, sites, "list the sites of a model"),
    "activations": (ActivationsConfig, activations,
                    "capture hidden states of a text file to disk"),
    "catalog": (CatalogConfig, catalog,
                "discover category features in a sign cache and save a catalog"),
    "query": (QueryConfig, query, "show a feature of a catalog, or explain a dim"),
    "steer": (SteerConfig, run_steer,
              "generate with and without a feature's sign flip, side by side"),
    "serve": (ServeConfig, serve, "browse a catalog in the browser (live steering with --model)"),
    "export-html": (ExportConfig, export_html, "write the browser's pages as a static site"),
    "contexts": (ContextsConfig, contexts, "compute a catalog's top activating contexts (data-parallel under accelerate launch)"),
}

DESCRIPTION = ("Training-free features over the standard basis of a transformer's hidden states: "
               "sign caches, catalogs, steering.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bagofdims`` (returns the exit code)."""
    return run(COMMANDS, argv, prog="bagofdims", description=DESCRIPTION)


def steer_main(argv: list[str] | None = None) -> int:
    """``bagofdims steer`` alone (``scripts/steer.py``): the same flags and error handling."""
    return main(["steer", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
