"""The checks every data reader makes before opening a user's file or folder, so that a missing
path, a folder given for a file and a file given for a folder each read the same way."""

from __future__ import annotations

import os

from reset_tune.errors import DataError


def require_file(path: str, what: str, hint: str = "") -> None:
    """Raise `DataError` unless `path` is a readable file (`what` names it: "label file")."""
    if os.path.isdir(path):
        raise DataError(f"{what} {path!r} is a directory, not a file{hint}")
    if not os.path.isfile(path):
        kind = "is not a regular file" if os.path.exists(path) else "does not exist"
        raise DataError(f"{what} {path!r} {kind}{hint}")
    if not os.access(path, os.R_OK):
        raise DataError(f"{what} {path!r} cannot be read (permission denied){hint}")


def require_folder(path: str, what: str, hint: str = "") -> None:
    """Raise `DataError` unless `path` is a folder (`what` names it: "image folder")."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{what} {path!r} is a file, not a folder{hint}")
    if not os.path.isdir(path):
        raise DataError(f"{what} {path!r} does not exist{hint}")
