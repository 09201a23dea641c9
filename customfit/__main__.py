"""`python -m customfit`: the command line (customfit.cli)."""

import sys

from customfit.cli import main

if __name__ == "__main__":
    sys.exit(main())
