"""`python -m reset_tune`: the `reset-tune` command, for environments without its script."""

from reset_tune.cli.main import console_main

if __name__ == "__main__":
    console_main()
