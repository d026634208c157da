"""`python -m falback ...`: the falback command where it is not installed (a Procfile app)."""

import sys

from falback.cli import main

sys.exit(main())
