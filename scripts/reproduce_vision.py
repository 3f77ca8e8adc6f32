"""Train a tiny ViT on scikit-learn's digits and count sign-detected classes per layer, against
its own random init.

    python scripts/reproduce_vision.py                  # writes runs/vision-digits/reports/
    python scripts/reproduce_vision.py --write-reports  # regenerates reports/vision-digits/

Flags: --help. The experiment lives in experiments/vision.py.
"""

import sys

from experiments.vision import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
