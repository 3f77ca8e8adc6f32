"""Reproduce the paper's E4: trained probes vs the training-free sign prototypes of the catalog.

    python scripts/reproduce_probes.py --model smollm2                  # writes runs/smollm2/reports/
    python scripts/reproduce_probes.py --model smollm2 --write-reports  # regenerates reports/smollm2/

Needs runs/<model>/cache and runs/<model>/catalog (scripts/reproduce_reading.py builds both).
Flags: --help. The experiment lives in experiments/probe_comparison.py.
"""

import sys

from experiments.probe_comparison import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
