"""Fixtures of the sweep tests: a real PostgreSQL server on 127.0.0.1, the toy train function on the path."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _toy_on_path(monkeypatch):
    """Worker processes import the toy train function by name: put this directory on their PYTHONPATH."""
    current = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{HERE}{os.pathsep}{current}" if current else str(HERE))
    monkeypatch.setenv("VLPEFT_TOY_SLEEP", "0.05")


def _pg_bindir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    candidates += [Path(p).parent for p in debian]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run `make setup` "
        "(it installs Debian's postgresql package with apt-get)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server on 127.0.0.1 (trust auth); yields ``(host, port)``.

    PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system user on a data
    directory it owns in a fresh temp dir.
    """
    bindir = _pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="vlpeft-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        for path in (base, sock):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8", "--no-sync"], **run)  # fmt: skip
    opts = f"-p {port} -k {sock} -h 127.0.0.1 -F -c max_connections=50"
    try:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
                        "-o", opts, "-w", "-t", "60", "start"], **run)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {exc.stderr} {log[-2000:]}")
    try:
        import psycopg2

        for _ in range(100):  # -w waits for readiness; still, be sure it accepts TCP connections
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh database on the test server, as an SQLAlchemy URL."""
    import psycopg2

    host, port = postgres_server
    name = f"sweep_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql+psycopg2://postgres@{host}:{port}/{name}"
