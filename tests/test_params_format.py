"""params files are written as DVC's own params writer writes them, so a DVC round trip changes nothing else.

``dvc exp run -S`` rewrites the whole file (ruamel.yaml round trip: ``null`` -> empty, ``"x"`` -> ``'x'``); a
file in that form changes only in the lines of the values set. Fix a failure with ``make format``
(``scripts/format_params.py``).
"""

from __future__ import annotations

import difflib
import shutil
import sys
from pathlib import Path

import pytest
from dvc.utils.hydra import apply_overrides

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from format_params import FILES, format_params  # noqa: E402


@pytest.mark.parametrize("name", FILES)
def test_params_file_is_a_fixed_point_of_dvcs_writer(name, tmp_path):
    copy = tmp_path / "params.yaml"
    shutil.copy(ROOT / name, copy)
    assert not format_params(copy), (
        f"{name} is not in DVC's form: run `make format` (scripts/format_params.py)"
    )


@pytest.mark.parametrize(
    "override",
    [
        "vqa.peft.rank=16",
        "sweep.timeout=600",
        "sweep.n_trials=6",
        "caption.peft.routing=mul",
        "kfp.image=x:1",
    ],
)
def test_dvc_set_changes_only_the_line_it_sets(override, tmp_path):
    copy = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", copy)
    before = copy.read_text().splitlines()
    apply_overrides(str(copy), [override])  # what `dvc exp run -S` calls
    changed = [d for d in difflib.unified_diff(before, copy.read_text().splitlines(), n=0, lineterm="")]
    changed = [d for d in changed if d[:1] in "+-" and not d.startswith(("---", "+++"))]
    key, value = override.split("=")
    new_line = changed[1][1:].split("#")[0].strip()
    assert len(changed) == 2 and new_line == f"{key.split('.')[-1]}: {value}", changed


def test_empty_values_load_as_null():
    from vlpeft.config import load_params

    params = load_params([ROOT / "params.yaml"], [])
    assert (
        params.sweep.timeout is None and params.sweep.storage is None and params.vqa.max_train_samples is None
    )
    multitask = load_params([ROOT / "multitask" / "params.yaml"], [])
    assert multitask.evaluate.spice == "off"  # DVC's writer leaves `off` unquoted; the loader reads the word
