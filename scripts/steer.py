"""Continue a prompt with and without a sign flip, side by side (same as ``bagofdims steer``).

    python scripts/steer.py --feature fruit --catalog runs/smollm2/catalog --prompt "My favourite fruit is"
"""

import sys

from bagofdims.cli.main import steer_main

if __name__ == "__main__":
    sys.exit(steer_main(sys.argv[1:]))
