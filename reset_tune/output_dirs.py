"""Checks of output locations before any work starts: minutes of training (or a search's records)
must never end in a traceback because the folder they were meant for cannot be written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from reset_tune.errors import ConfigError


def check_output_dir(
    directory: str | os.PathLike[str], files: Iterable[str] = (), *, option: str
) -> None:
    """Raise `ConfigError` (naming `option`) unless `directory` is, or can be created as, a
    writable folder in which each of `files` can be written. Creates nothing that stays: the
    writability probe is a temporary folder, removed at once."""
    folder = Path(directory).expanduser()
    try:
        _check_folder(folder, files, option)
    except OSError as error:  # e.g. a name too long for the file system
        reason = error.strerror or str(error)
        raise ConfigError(f"{option} {folder}: not a usable folder ({reason})") from None


def _check_folder(folder: Path, files: Iterable[str], option: str) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"{option} {folder}: is a file, not a folder; give a folder for the outputs"
        )
    for name in files:
        target = folder / name
        if target.is_dir():
            raise ConfigError(
                f"{option} {folder}: {name} there is a folder, so the {name} output cannot be "
                "written; remove it or choose another folder"
            )
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{option} {folder}: {existing} is a file, not a folder, so {folder} cannot be "
            "created; choose another place"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".reset-tune-probe-", dir=existing)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"{option} {folder}: cannot create folders in {existing} ({reason}); choose a "
            "writable place"
        ) from None
    os.rmdir(probe)
