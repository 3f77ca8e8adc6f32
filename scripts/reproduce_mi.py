"""Reproduce the paper's E9 (pairwise sign mutual information) on one model, per site: bias
corrected, against a shuffled baseline and a rotated control, at position and type level.

    python scripts/reproduce_mi.py --model smollm2                  # writes runs/smollm2/reports/mi.md
    python scripts/reproduce_mi.py --model smollm2 --write-reports  # regenerates reports/smollm2/mi.md

States at every ``resid`` site and ``final`` on the packaged Wikipedia leads, as the reading
report collects them. Type level reads the sign cache at ``--cache`` (default
``<runs>/<model>/cache``) when it exists; without one the page says so. Flags: --help.
The experiment lives in experiments/mi_run.py (estimators: mi.py, page: mi_report.py).
"""

import sys

from experiments.mi_run import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
