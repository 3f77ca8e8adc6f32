"""Generate the shipped category word lists (bagofdims/categories/default.json).

    python scripts/make_categories.py --wordnet WN3_DIR --deps DEPS_DIR --names NAMES_DIR

Sources, criteria and the commands that fetch the inputs: experiments/category_lists.py.
"""

import sys

from experiments.category_lists import main
from experiments.runs import entry

if __name__ == "__main__":
    sys.exit(entry(main))
