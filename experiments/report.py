"""What every report writer shares: atomic JSON / markdown / figure files, number summaries and
formatting, the command line that regenerates a report, and a headless matplotlib.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import sys
from pathlib import Path

__all__ = ["command", "fmt", "pyplot", "save_figure", "summary", "verdict_row", "write_json",
           "write_report", "write_text"]


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last so savefig still knows the format; the pid keeps two runs apart
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (a reader never sees half a file); returns the path."""
    return _atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON (one value per line keeps report diffs readable)."""
    return write_text(path, json.dumps(obj, indent=1) + "\n")


def write_report(out_dir: str | Path, stem: str, result: dict, markdown: str) -> Path:
    """``<out_dir>/<stem>.json`` and ``<stem>.md``; returns the markdown's path."""
    out_dir = Path(out_dir)
    write_json(out_dir / f"{stem}.json", result)
    return write_text(out_dir / f"{stem}.md", markdown)


def command(script: str, argv=None) -> str:
    """The shell command that reruns ``script`` with ``argv`` (default: this process's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", script, *argv])


def summary(values) -> dict:
    """Median, mean, quartiles and count of ``values`` (NaN left out)."""
    v = [float(x) for x in values if x == x]
    if not v:
        return {"median": float("nan"), "mean": float("nan"), "n": 0}
    quart = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "mean": statistics.fmean(v), "n": len(v),
            "q25": quart[0], "q75": quart[2]}


def fmt(value, digits: int = 3, sign: bool = False) -> str:
    """A number for a table: ``–`` for a missing or NaN value; ``sign`` always shows + / -."""
    if value is None or value != value:
        return "–"
    return f"{value:{'+' if sign else ''}.{digits}f}"


def verdict_row(v: dict) -> str:
    """One verdict-table row; a ``|`` inside a cell (``top-|h|``) is escaped so the row keeps
    its four cells."""
    cell = lambda text: re.sub(r"(?<!\\)\|", r"\\|", str(text))  # noqa: E731
    return f"| {cell(v['claim'])} | {cell(v['ours'])} | **{v['verdict']}** | {cell(v['why'])} |"


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (reports run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` atomically and close it."""
    try:
        return _atomic(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi))
    finally:
        pyplot().close(fig)
