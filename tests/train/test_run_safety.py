"""A run never costs the earlier one: late-read inputs are checked before training, ``--out`` is locked, the
new run is built beside ``--out`` and swapped in only when complete, and a resumed run's curves are whole.

Cases of issue 24 (a feature shard whose header lies, broken test annotations, a broken
``captions_test.json``, two trainings into one ``--out``, a kill between the last checkpoint and its curves,
a full disk) and more of our own.
"""

# ruff: noqa: E501 (case tables and long CLI lines read best unwrapped)
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file
from test_bad_input import _params_file, one_error_line, snapshot

from vlpeft.cli import main
from vlpeft.io import MARKER, partial_path


@pytest.fixture(scope="module")
def earlier(tiny_world, train_backbones, tmp_path_factory):
    """A completed one-epoch VQA run: the earlier run every failing run below must leave as it was."""
    base = tmp_path_factory.mktemp("earlier")
    params = _params_file(base, train_backbones)
    out = base / "run"
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features",
               str(train_backbones["features"]), "--out", str(out), "--params", params])  # fmt: skip
    assert rc == 0
    assert (out / MARKER).is_file() and not partial_path(out).exists()  # built beside, swapped in whole
    return {"out": out, "params": params}


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _other_questions(path):
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        ann["question_id"] += 10**6
    path.write_text(json.dumps(data))


def _shard_drops_a_row(path):
    tensors = load_file(str(path))
    tensors["pooled"] = tensors["pooled"][:-1].contiguous()  # the header now says one row fewer
    save_file(tensors, str(path), metadata={"format": "vlpeft-features"})


def _shard_ids_swapped(path):
    tensors = load_file(str(path))
    tensors["image_ids"] = tensors["image_ids"].flip(0).contiguous()
    save_file(tensors, str(path), metadata={"format": "vlpeft-features"})


# case -> (task, file under the world copy or the feature copy, how it is broken, what the one line says)
CASES = {
    "truncated test annotations": ("vqa", "world/vqa/test_annotations.json", _truncate, "not valid JSON"),
    "test annotations of other questions": ("vqa", "world/vqa/test_annotations.json", _other_questions,
                                            "no annotation with this question_id"),
    "truncated test questions": ("vqa", "world/vqa/test_questions.json", _truncate, "not valid JSON"),
    "broken captions_test.json": ("caption", "world/captions_test.json", _truncate, "not valid JSON"),
    "shard header lies about its rows": ("vqa", "features/shard-00000.safetensors", _shard_drops_a_row,
                                         "pooled features have shape"),
    "shard rows of other images": ("vqa", "features/shard-00000.safetensors", _shard_ids_swapped, "holds image"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_inputs_read_after_training_are_refused_before_it(case, earlier, tiny_world, train_backbones, tmp_path,
                                                          capsys):  # fmt: skip
    task, broken, spoil, message = CASES[case]
    shutil.copytree(tiny_world, tmp_path / "world")
    shutil.copytree(train_backbones["features"], tmp_path / "features")
    spoil(tmp_path / broken)
    out = tmp_path / "run"
    shutil.copytree(earlier["out"], out)
    before = snapshot(out)
    rc = main(["train", "--task", task, "--data", str(tmp_path / "world"), "--features",
               str(tmp_path / "features"), "--out", str(out), "--params", earlier["params"]])  # fmt: skip
    one_error_line(capsys, rc, (tmp_path / broken).name, message)
    assert snapshot(out) == before
    assert not partial_path(out).exists()  # refused before anything was trained or written


def test_a_failure_during_training_keeps_the_earlier_run(
    earlier, tiny_world, train_backbones, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(earlier["out"], out)
    before = snapshot(out)
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", str(train_backbones["features"]),
               "--out", str(out), "--params", earlier["params"], "-S", "vqa.lr=1e30", "-S", "vqa.grad_clip=0",
               "-S", "vqa.checkpoint_every=1"])  # fmt: skip
    one_error_line(capsys, rc, "became", "last good checkpoint kept at", str(partial_path(out)))
    assert snapshot(out) == before  # the earlier run, whole, until a new one completes


def test_a_second_training_into_the_same_out_is_refused(
    earlier, tiny_world, train_backbones, tmp_path, capsys
):
    """Another process holds --out (as a training does for its whole run): refused in one line naming it; once
    that process dies (SIGKILL: no clean-up), the kernel has released its lock."""
    from vlpeft.io import exclusive_output

    out = tmp_path / "run"
    shutil.copytree(earlier["out"], out)
    before = snapshot(out)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom vlpeft.io import exclusive_output\n"
         "with exclusive_output(sys.argv[1], 'training'):\n    print('locked', flush=True)\n    sys.stdin.read()\n",
         str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features",
                   str(train_backbones["features"]), "--out", str(out), "--params", earlier["params"]])  # fmt: skip
        one_error_line(capsys, rc, f"{out}: another training is writing here (process {holder.pid} on")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    with exclusive_output(out):  # free again
        pass


def test_resume_after_a_kill_between_the_last_checkpoint_and_its_curves(earlier, tiny_world, train_backbones,
                                                                        tmp_path):  # fmt: skip
    """The last epoch's checkpoint is written, the process dies before its curves.json is: the resumed run
    has no epoch left to train and must still publish every epoch's curves (equal to an uninterrupted run's)."""
    from vlpeft.config import load_params
    from vlpeft.train.run import train_task

    class Crash(Exception):
        pass

    def crash(epoch: int, value: float) -> None:
        raise Crash  # after the last (only) epoch's checkpoint

    params = load_params([earlier["params"]])
    out = tmp_path / "run"
    features = train_backbones["features"]
    with pytest.raises(Crash):
        train_task(params, "vqa", tiny_world, features, out, report=crash, progress=False)
    build = partial_path(out)
    assert json.loads((build / "last" / "trainer" / "state.json").read_text())["epoch"] == 1
    (build / "curves.json").unlink()  # what a kill right after the checkpoint leaves
    train_task(params, "vqa", tiny_world, features, out, resume=True, progress=False)
    assert json.loads((out / "curves.json").read_text()) == json.loads(
        (earlier["out"] / "curves.json").read_text()
    )
    assert len(json.loads((out / "curves.json").read_text())) == 1
    assert not build.exists()


def test_training_on_a_full_disk_names_the_file_and_keeps_the_earlier_run(small_disk, tiny_world, train_backbones,
                                                                          tmp_path, capsys):  # fmt: skip
    """No room for the first checkpoint (a real full filesystem): one line naming the file that could not be
    written, and the earlier results in --out are untouched."""
    params = _params_file(tmp_path, train_backbones)
    disk = small_disk("1m", free=0)
    (disk / "filler").unlink()
    out = disk / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}\n')
    with open(disk / "filler", "wb", buffering=0) as fh:  # full again
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    rc = main(["train", "--task", "vqa", "--data", str(tiny_world), "--features", str(train_backbones["features"]),
               "--out", str(out), "--params", params])  # fmt: skip
    one_error_line(capsys, rc, str(disk), "no space left on device")
    assert (out / "metrics.json").read_text() == '{"earlier": true}\n'


def test_a_pickle_in_a_model_folder_is_refused_unread(earlier, tiny_world, tmp_path, capsys):
    """``vlpeft predict`` on a trained model folder with a pickle ``adapter_model.bin`` beside its safetensors
    (which peft would otherwise torch.load): one line naming it, and the pickle's payload never runs."""
    import pickle

    from vlpeft.data.vqa import load_vqa

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    model = tmp_path / "best"
    shutil.copytree(earlier["out"] / "best", model)
    (lm,) = [p for p in model.iterdir() if p.is_dir()]
    (lm / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))
    record = load_vqa(tiny_world, "test")[0]
    rc = main(["predict", "--model", str(model), "--image", str(record.path), "--question", record.question])
    one_error_line(capsys, rc, "adapter_model.bin: pickle-format file in a model folder refused")
    assert not (tmp_path / "pwned").exists()
