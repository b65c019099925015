"""Credentials never leave the process: the one owner of "which part of this text is a secret".

Every form below loses its secret (replaced by ``***``) and keeps the rest (scheme, user, host, path):

- URL userinfo ``scheme://user:password@host``, where the password may hold raw ``/``, ``@``, ``:``, ``?``:
  the userinfo ends at the LAST ``@`` of the URL (``postgresql://u:pa/ss@w@host/db`` -> ``u:***@host/db``);
  a URL whose query holds an ``@`` after a ``:`` therefore loses a little more than its password (never less).
- query (and DSN) parameters named like a secret: ``?password=``, ``&token=``, ``;sig=``, ``client_secret=``,
  ``X-Amz-Signature=``, ``api_key=`` ... (any name containing password/passwd/pwd/pass/secret/token/key/sig/
  credential/auth), in URLs and as ``name=value`` words in free text (``host=h password=x``,
  ``MLFLOW_TRACKING_PASSWORD=x``);
- the same forms percent-encoded (a URL inside another URL's query: ``%3A%2F%2Fu%3Apw%40host``,
  ``%3Fpassword%3Dx``; a percent-encoded parameter name such as ``p%61ssword``);
- ``Authorization: Bearer <token>`` / ``Basic <token>`` header text;

Contract for every other module: ``redact_text(s) != s`` means ``s`` holds a credential (the Kubeflow compiler
refuses such values). Applied where data leaves us: the resolved config as plain data
(``config.params_to_dict``: every artifact, every printed config), error lines, the CLI's error line and
tracebacks (:func:`print_traceback`), MLflow params/tags/artifacts and the local tracking log, and lines
libraries print on our behalf (:class:`RedactingStream`).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import unquote

HIDDEN = "***"

# Words that make a parameter (or mapping key) name a secret. "key" also catches api_key, access_key,
# sslkey, X-Amz-Credential's sibling keys; "sig" catches sig, signature, X-Amz-Signature.
_SECRET_WORD = re.compile(r"pass|pwd|secret|token|key|sig|credential|auth", re.IGNORECASE)
# Names that stand alone (outside a URL query) as "name=value" in free text: a narrower list, so that
# everyday words in messages ("keys=", "tokens=") are not taken for secrets.
_FREE_NAME = re.compile(
    r"(?<![\w.%-])(?P<name>[A-Za-z0-9_.-]*?"
    r"(?:password|passwd|passphrase|pwd|secret|token|api_?key|access_?key|secret_?key|private_?key|sig|signature)"
    r")(?P<eq>=)(?P<value>[^\s&;'\"<>]+)",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*(?P<sep>://|%3[Aa]%2[Ff]%2[Ff])")
# What ends a URL inside free text (a password with a blank or a quote in it must be percent-encoded).
_URL_END = re.compile(r"[\s'\"<>`]")
# A query parameter: raw (``?a=b&c=d``), or percent-encoded inside another URL (``%3Fa%3Db%26c%3Dd``).
# A raw value runs to the next ``&name=`` / ``;name=`` or the end of the URL: a password holding a raw "&",
# "#" or "=" is hidden whole.
_QUERY_RAW = re.compile(
    r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-%]+)=(?P<value>[^\s'\"<>`]*?)(?=[&;][A-Za-z0-9_.\-%]+=|[\s'\"<>`]|$)"
)
_QUERY_ENCODED = re.compile(
    r"(?P<sep>%3[Ff]|%26|%3[Bb])(?P<name>[A-Za-z0-9_.\-]+)%3[Dd](?P<value>(?:(?!%26|%3[Bb])[^\s'\"<>`&;#])*)"
)
_AUTH_HEADER = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?|\bBearer\s+(?=[\w.~+/=-]{16}))"
    r"(?P<value>[^\s'\"]+)",
    re.IGNORECASE,
)


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_WORD.search(unquote(name)))


def _redact_userinfo(text: str) -> str:
    """Hide the password of every ``scheme://user:password@host`` in ``text`` (raw or percent-encoded)."""
    out: list[str] = []
    pos = 0
    starts = list(_SCHEME.finditer(text))
    for i, match in enumerate(starts):
        begin = match.end()
        if begin < pos:
            continue
        limit = starts[i + 1].start() if i + 1 < len(starts) else len(text)  # the next URL starts anew
        end_match = _URL_END.search(text, begin, limit)  # bounded: linear time over many URLs
        end = end_match.start() if end_match else limit
        url = text[begin:end]
        encoded = match["sep"] != "://"
        at = max(url.rfind("@"), url.upper().rfind("%40") if encoded else -1)
        if at <= 0:
            continue
        userinfo = url[:at]
        colons = [c for c in (userinfo.find(":"), userinfo.upper().find("%3A") if encoded else -1) if c >= 0]
        if not colons:
            continue  # a user without a password
        colon = min(colons)
        user = userinfo[:colon]
        if "/" in user or (encoded and "%2F" in user.upper()):
            continue  # the ":" is in a path, not in userinfo (``http://host/a:b@c``)
        width = 1 if userinfo[colon] == ":" else 3
        if colon + width >= at:
            continue  # ``user:@host``: empty password
        out.append(text[pos : begin + colon + width])
        out.append(HIDDEN)
        pos = begin + at
    out.append(text[pos:])
    return "".join(out)


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, user, password)`` of one URL (user/password percent-decoded; None when
    absent). The userinfo ends at the URL's last ``@``, so a raw ``/``, ``@`` or ``:`` in a password works."""
    match = _SCHEME.match(url)
    if match is None or match["sep"] != "://":
        return url, None, None
    rest = url[match.end() :]
    at = rest.rfind("@")
    if at < 0:
        return url, None, None
    user, colon, password = rest[:at].partition(":")
    if "/" in user:
        return url, None, None
    return url[: match.end()] + rest[at + 1 :], unquote(user), unquote(password) if colon else None


def _redact_query(text: str) -> str:
    """Hide the value of every query/DSN parameter named like a secret."""

    def sub(m: re.Match[str]) -> str:
        if not m["value"] or not _is_secret_name(m["name"]):
            return m[0]
        return m[0][: m.start("value") - m.start()] + HIDDEN

    return _QUERY_ENCODED.sub(sub, _QUERY_RAW.sub(sub, text))


def redact_text(text: str) -> str:
    """``text`` with every credential in it (see the module docstring) replaced by ``***``."""
    if not text:
        return text
    text = _redact_userinfo(text)
    text = _redact_query(text)
    text = _FREE_NAME.sub(lambda m: m[0] if m["value"] == HIDDEN else f"{m['name']}{m['eq']}{HIDDEN}", text)
    return _AUTH_HEADER.sub(lambda m: f"{m['head']}{HIDDEN}", text)


def holds_credential(text: str) -> bool:
    """Whether ``text`` holds a credential in any form :func:`redact_text` knows."""
    return redact_text(text) != text


def redact(data: Any) -> Any:
    """``data`` (nested dicts, lists, strings) with :func:`redact_text` applied to every string in it.

    Keys are not judged: ``kfp.mlflow_secret`` names a Kubernetes Secret, it does not hold one, and the
    resolved config must survive a round trip through this function."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {k: redact(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact(v) for v in data)
    return data


class RedactingStream(io.TextIOBase):
    """A text stream that redacts what it forwards, line by line (libraries print URLs on our behalf:
    MLflow's "View run ... at http://u:pw@host/..." line)."""

    def __init__(self, target: TextIO) -> None:
        self._target = target
        self._pending = ""

    def write(self, s: str) -> int:
        self._pending += s
        if "\n" in self._pending:
            done, _, self._pending = self._pending.rpartition("\n")
            self._target.write(redact_text(done + "\n"))
        return len(s)

    def flush(self) -> None:
        if self._pending:
            self._target.write(redact_text(self._pending))
            self._pending = ""
        self._target.flush()

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    """Within the block, what is printed to stdout/stderr (by a library on our behalf) is redacted."""
    out, err = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.flush()
        err.flush()


def print_traceback(exc: BaseException) -> None:
    """Print ``exc``'s traceback to stderr as Python would, with :func:`redact_text` applied (a bug's
    traceback may quote a ``--set`` value or a URL with its password)."""
    import traceback

    sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))
    sys.stderr.flush()
