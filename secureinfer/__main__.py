"""`python -m secureinfer ...` is the `secureinfer` command."""

import sys

from secureinfer.cli import main

sys.exit(main())
