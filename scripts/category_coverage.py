"""How many shipped categories a model's tokenizer can use, and how well their features read.

    python scripts/category_coverage.py --model smollm2                  # writes runs/smollm2/reports/
    python scripts/category_coverage.py --model smollm2 --write-reports  # regenerates reports/smollm2/

Needs runs/<model>/cache (scripts/reproduce_reading.py or `bagofdims capture` builds it).
Flags: --help. The experiment lives in experiments/category_coverage.py.
"""

import sys

from experiments.category_coverage import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
