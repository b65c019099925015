"""The README's Python API example runs as written (a fresh interpreter, in an empty directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The fenced code block right after ``<!-- readme-example: marker -->`` in the README."""
    text = README.read_text()
    found = re.search(rf"<!-- readme-example: {re.escape(marker)} -->\n```\w*\n(.*?)\n```", text, flags=re.S)
    assert found, f"README.md has no example marked {marker!r}"
    return found.group(1)


def test_python_api_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_block("python-api"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
    assert (tmp_path / "my-adapter" / "README.md").is_file() and (tmp_path / "plain-adapter").is_dir()
