"""`python -m reset_tune`: the `reset-tune` command, for environments without its script."""

import sys

from reset_tune.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
