"""`python -m secureinfer.cli ...` is the `secureinfer` command."""

import sys

from .app import main

sys.exit(main())
