"""`python -m customops.bench`: every op's speed against its native twin (see customops.testing.bench)."""

import sys

from .testing.bench import main

if __name__ == "__main__":
    sys.exit(main())
