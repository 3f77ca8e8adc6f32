"""Reproduce E5 (K/V survival), E6 (FFN writers) and E7 (sign flips) on a real model.

    python scripts/reproduce_causal.py --model smollm2                  # writes runs/smollm2/reports/
    python scripts/reproduce_causal.py --model smollm2 --write-reports  # regenerates reports/smollm2/
    python scripts/reproduce_causal.py --model smollm2 --write-reports --reuse-e7   # E5/E6 only,
                                            # E7 kept from the causal.json there (stated on the page)

Flags: --help. The experiment lives in experiments/causal.py (E7 in experiments/sign_flips.py).
"""

import sys

from experiments.causal import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
