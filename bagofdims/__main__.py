"""``python -m bagofdims`` = ``bagofdims`` (also what ``accelerate launch -m bagofdims`` runs)."""

import sys

from bagofdims.cli.main import main

sys.exit(main())
