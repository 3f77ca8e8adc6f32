"""``python -m bagofdims.cli`` = ``bagofdims``."""

import sys

from bagofdims.cli.main import main

sys.exit(main())
