"""Reproduce the paper's reading experiments (E1, E2, E3, E8, E9) on one model, per layer.

    python scripts/reproduce_reading.py --model smollm2                  # writes runs/smollm2/reports/
    python scripts/reproduce_reading.py --model smollm2 --write-reports  # regenerates reports/smollm2/

Flags: --help. The experiment lives in experiments/reading.py.
"""

import sys

from experiments.reading import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
