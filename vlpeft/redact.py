"""Credentials never leave the process: the one function that strips them from what is written or printed.

A URL with a password (``postgresql://user:secret@host/db``, ``https://user:token@host/...``) keeps its user,
host and path and loses the password (``***``). Applied where data leaves us: the resolved config as plain
data (``config.params_to_dict``: every artifact, every printed config), config error lines, the CLI's error
line, and everything a tracker sends to MLflow or its local log.
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "***"
# scheme://user:password@  (the password may hold anything but "@", "/" and blanks: URLs encode those)
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)


def redact(data: Any) -> Any:
    """``data`` (nested dicts, lists, strings) with :func:`redact_text` applied to every string in it."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {k: redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact(v) for v in data)
    return data
