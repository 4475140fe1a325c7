"""``python -m edge.cli``: the same as the ``asd-edge`` console script."""

import sys

from edge.cli import main

if __name__ == "__main__":
    sys.exit(main())
