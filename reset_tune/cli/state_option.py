"""The `--state-dir` every service command takes, checked once for all of them."""

from __future__ import annotations

from pathlib import Path

from reset_tune.errors import ConfigError
from reset_tune.state import state_dir


def checked_state_dir(explicit: str | None, *, writable: bool = False) -> Path:
    """The state directory (`--state-dir`, $RESET_TUNE_STATE_DIR or ./.reset-tune), refused in one
    line when it is a file; with `writable`, also unless it is (or can be made) a writable
    folder. Creates nothing."""
    state = state_dir(explicit)
    if state.exists() and not state.is_dir():
        raise ConfigError(
            f"--state-dir {state}: is a file, not a folder; give a folder for reset-tune's state"
        )
    if writable:
        from reset_tune.output_dirs import check_output_dir

        check_output_dir(state, option="--state-dir")
    return state
