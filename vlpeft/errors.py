"""User-facing errors.

Library code raises these for mistakes a user can fix (bad config value, malformed input file, missing
file). The CLI turns them into one clear line on stderr and exit code 2, without a traceback. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; the message names the file, field or value."""

    exit_code = 2


class ConfigError(UserError):
    """A params file has an unknown key, a bad value or a bad combination of values."""


class DataError(UserError):
    """An input data file is missing, unreadable or malformed."""


class TrainingError(UserError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class TrackingError(UserError):
    """The tracking server or model registry is unreachable or misconfigured."""


class MissingProgramError(UserError):
    """An external program a step needs (e.g. ``java`` for the caption metrics) is not on PATH."""
