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


def as_user_error(exc: BaseException) -> UserError | None:
    """The user error a library exception stands for at the CLI boundary; None for a bug (keep its traceback).

    Filesystem errors naming a file (permission denied, a parent that is a file, disk full, ...) and
    unreadable safetensors files are the user's to fix, whichever command ran into them.
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError) and exc.filename is not None:
        names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return DataError(f"{names}: {exc.strerror or type(exc).__name__}")
    if type(exc).__name__ == "SafetensorError":  # safetensors' Rust error type (not importable cheaply here)
        return DataError(f"unreadable safetensors file ({' '.join(str(exc).split())[:200]})")
    return None
