"""What a single token is read after changes its cached signs: alone vs start tokens, per layer.

    python scripts/compare_inputs.py --model smollm2                  # writes runs/smollm2/reports/
    python scripts/compare_inputs.py --model smollm2 --write-reports  # regenerates reports/smollm2/

Flags: --help. The experiment lives in experiments/input_comparison.py.
"""

import sys

from experiments.input_comparison import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
