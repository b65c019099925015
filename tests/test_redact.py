"""``vlpeft.redact``: every credential-bearing form loses its secret and keeps the rest; text without a
credential is returned unchanged (the contract ``redact_text(s) != s`` <=> ``s`` holds a credential)."""

# ruff: noqa: E501 (case tables: one case per line reads best)
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from vlpeft.redact import HIDDEN, RedactingStream, redact, redact_text, split_userinfo

SECRET = "Zx9-secret"

# (text with the secret, what must remain of it): the forms of issue 24 and more of our own.
CASES = [
    (f"postgresql://user:{SECRET}@host:5432/db", "postgresql://user:***@host:5432/db"),
    (f"postgresql://user:pa/ss@w{SECRET}@host/db", "postgresql://user:***@host/db"),  # raw "/" and "@"
    (f"postgresql://user:a:b/{SECRET}?@host/db", "postgresql://user:***@host/db"),  # raw ":" and "?"
    (f"mysql://u:p%40{SECRET}@h/db", "mysql://u:***@h/db"),  # percent-encoded "@"
    (f"http://u:{SECRET}@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"),
    (f"postgresql://u@127.0.0.1/db?password={SECRET}", "postgresql://u@127.0.0.1/db?password=***"),
    (f"postgresql://u@h/db?sslmode=require&password={SECRET}&x=1", "postgresql://u@h/db?sslmode=require&password=***&x=1"),
    (f"postgresql://u@h/db?password=ab&{SECRET}#frag&x=1", "postgresql://u@h/db?password=***&x=1"),  # raw "&", "#"
    (f"https://h/o?X-Amz-Credential=AK&X-Amz-Signature={SECRET}", "https://h/o?X-Amz-Credential=***&X-Amz-Signature=***"),
    (f"https://acct.blob/c?sv=2020&sig={SECRET}", "https://acct.blob/c?sv=2020&sig=***"),
    (f"https://h/api?api_key={SECRET}&page=2", "https://h/api?api_key=***&page=2"),
    (f"https://h/api?access_token={SECRET}", "https://h/api?access_token=***"),
    (f"https://h/api?pwd={SECRET};passwd={SECRET}", "https://h/api?pwd=***;passwd=***"),
    (f"https://h/api?p%61ssword={SECRET}", "https://h/api?p%61ssword=***"),  # encoded name
    (f"next=http%3A%2F%2Fu%3A{SECRET}%40host%2Fdb", "next=http%3A%2F%2Fu%3A***%40host%2Fdb"),  # encoded URL
    (f"https://h/?next=%2Fp%3Fa%3D1%26token%3D{SECRET}%26b%3D2", "https://h/?next=%2Fp%3Fa%3D1%26token%3D***%26b%3D2"),
    (f"host=db user=u password={SECRET} dbname=x", "host=db user=u password=*** dbname=x"),  # libpq DSN
    (f"MLFLOW_TRACKING_PASSWORD={SECRET} vlpeft train", "MLFLOW_TRACKING_PASSWORD=*** vlpeft train"),
    (f"Authorization: Bearer {SECRET}abcdefghij", "Authorization: Bearer ***"),
    (f"'postgresql://a:{SECRET}@h/db' and 'mysql://c:{SECRET}@e/f'", "'postgresql://a:***@h/db' and 'mysql://c:***@e/f'"),
    (f"sweep.storage=postgresql://u:{SECRET}@h/db: cannot open", "sweep.storage=postgresql://u:***@h/db: cannot open"),
]  # fmt: skip

CLEAN = [
    "sqlite:////tmp/mlflow.db",
    "http://127.0.0.1:5000/#/experiments/1",
    "postgresql://optuna@db.example:5432/optuna",  # a user, no password
    "git+ssh://git@github.com/org/repo.git",
    "file:///tmp/a:b@c",  # ":" and "@" in a path
    "https://h/search?q=lora&rank=8",
    "keys=3 tokens=5 max_tokens=4 monkey=1 basic routing",
    "vqa.peft.rank=8 kfp.mlflow_secret: vlpeft-mlflow",
    "",
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_every_form_loses_its_secret(text, expected):
    out = redact_text(text)
    assert out == expected
    assert SECRET not in out
    assert redact_text(out) == out  # idempotent: redacted text reads as credential-free


@pytest.mark.parametrize("text", CLEAN)
def test_text_without_credentials_is_unchanged(text):
    assert redact_text(text) == text


def test_redact_nested_data():
    data = {
        "a": [f"http://u:{SECRET}@h", ("x", f"?token={SECRET}")],
        "kfp": {"mlflow_secret": "vlpeft-mlflow"},
    }
    out = redact(data)
    assert SECRET not in repr(out)
    assert out["kfp"]["mlflow_secret"] == "vlpeft-mlflow"  # a Secret's name, not a secret
    assert out["a"][1] == ("x", f"?token={HIDDEN}")


def test_split_userinfo_takes_the_last_at():
    assert split_userinfo("http://me:pa/ss@w@host:5000/x") == ("http://host:5000/x", "me", "pa/ss@w")
    assert split_userinfo("http://me:p%40s@h") == ("http://h", "me", "p@s")
    assert split_userinfo("http://h:5000") == ("http://h:5000", None, None)


def test_redacting_stream_redacts_lines_it_forwards():
    sink = io.StringIO()
    stream = RedactingStream(sink)
    stream.write(f"View run x at: http://u:{SECRET}")
    assert sink.getvalue() == ""  # held until the line is complete: a secret split over writes is caught
    stream.write("@h/#/runs/1\nnext")
    stream.flush()
    assert sink.getvalue() == "View run x at: http://u:***@h/#/runs/1\nnext"


def test_a_bugs_traceback_is_redacted(tmp_path):
    """An unexpected exception in the CLI keeps its traceback, minus the password it quotes."""
    code = (
        "import sys; from vlpeft.cli import main, app\n"
        "@app.command('boom')\n"
        f"def boom():\n    raise RuntimeError('cannot reach postgresql://u:{SECRET}@h/db')\n"
        "sys.exit(main(['boom']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "postgresql://u:***@h/db" in r.stderr
    assert SECRET not in r.stderr + r.stdout


@pytest.mark.parametrize(
    "storage",
    [
        f"postgresql://u@127.0.0.1/db?password={SECRET}",  # issue 24's compile case
        f"postgresql://u:pa/ss@w{SECRET}@127.0.0.1/db",
        f"postgresql://u@127.0.0.1/db?sslmode=require&sslpassword={SECRET}",
    ],
)
def test_kubeflow_compile_refuses_every_credential_form(storage):
    """The compiler's contract with this module: a credential in params is refused, never compiled in."""
    from pipelines.compile import params_yaml_text
    from vlpeft.config import load_params
    from vlpeft.errors import ConfigError

    params = load_params([], [f"sweep.storage={storage}"])
    with pytest.raises(ConfigError, match=r"sweep\.storage: has a password"):
        params_yaml_text(params)
    assert "postgresql://u@127.0.0.1/db" in params_yaml_text(
        load_params([], ["sweep.storage=postgresql://u@127.0.0.1/db"])
    )
