"""`python -m mars2.tasks stats task=minicode` (see :mod:`mars2.tasks.stats`)."""
import sys

from mars2.tasks.stats import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
