"""The project's exception hierarchy: user mistakes versus training failures."""

from __future__ import annotations


class ResetTuneError(Exception):
    """Base of every error reset-tune raises on purpose."""


class ConfigError(ResetTuneError, ValueError):
    """A setting a user gave is invalid; the message names it and the allowed values."""


class DataError(ResetTuneError):
    """A dataset or label file is missing or malformed; the message says how to fix it."""


class TrainingDiverged(ResetTuneError):
    """The training loss became NaN or infinite."""
