"""Database URLs (Optuna storage, MLflow store): a bare ``postgresql://`` / ``mysql://`` works with what is
installed, and a missing driver is one line naming the package to install.

SQLAlchemy 2.1 maps a URL without a driver to its default DBAPI (``postgresql://`` -> psycopg 3, ``mysql://``
-> mysqlclient). The lock installs psycopg2 (and no MySQL driver), so a bare URL is given the first installed
driver of its dialect, in SQLAlchemy's order of preference.
"""

from __future__ import annotations

import importlib.util

from vlpeft.errors import ConfigError
from vlpeft.redact import redact_text

# dialect -> (driver, module to import, package to install), preferred first
DRIVERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "postgresql": (("psycopg", "psycopg", "psycopg[binary]"), ("psycopg2", "psycopg2", "psycopg2-binary")),
    "mysql": (("mysqldb", "MySQLdb", "mysqlclient"), ("pymysql", "pymysql", "PyMySQL")),
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_driver(url: str, what: str) -> str:
    """``url`` with an installed driver for its dialect; ``ConfigError`` (naming ``what``, e.g.
    ``sweep.storage``, and the package) when none is installed. Other URLs are returned unchanged."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not an SQLAlchemy URL (an http:// server, a file path): not ours to judge
    dialect, _, driver = parsed.drivername.partition("+")
    options = DRIVERS.get(dialect)
    if not options:
        return url
    if driver:
        known = {d: (module, package) for d, module, package in options}
        if driver in known and not _installed(known[driver][0]):
            raise ConfigError(
                f"{what} {redact_text(url)}: database driver {driver} is not installed "
                f"(pip install {known[driver][1]})"
            )
        return url
    for name, module, _ in options:
        if _installed(module):
            return parsed.set(drivername=f"{dialect}+{name}").render_as_string(hide_password=False)
    packages = " or ".join(package for _, _, package in options)
    raise ConfigError(
        f"{what} {redact_text(url)}: no {dialect} database driver installed (pip install {packages})"
    )
