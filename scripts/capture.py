"""Build a sign cache: the same as `bagofdims capture` (flags: --help)."""

import sys

from bagofdims.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["capture", *sys.argv[1:]]))
