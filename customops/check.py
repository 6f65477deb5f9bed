"""`python -m customops.check`: every op under every check (see customops.testing.check)."""

import sys

from .testing.check import main

if __name__ == "__main__":
    sys.exit(main())
