"""`python -m secureinfer ...` is the `secureinfer` command."""

import sys

from .cli import main

sys.exit(main())
