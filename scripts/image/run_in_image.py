"""Run real vlpeft stages in a built image through ``kfp.local.DockerRunner`` (`make image-local`).

    python scripts/image/run_in_image.py --image localhost/vlpeft/vlpeft:0.1.0-cpu --work /tmp/x/run

A kfp pipeline on the tiny world (32 px, 24/8/8 images, width-32 one-layer backbones, one epoch), every task
a lightweight component whose ``base_image`` is the image: data synth -> pretrain -> features -> caption
train -> caption evaluate (pycocoevalcap's Java PTB tokenizer, METEOR, BLEU, ROUGE-L, CIDEr as the image's
non-root user), with MLflow tracking into a sqlite file on the bind-mounted pipeline root. Each task is one
container started by DockerRunner (``--network none``: nothing is fetched at run time, no pip).
Then the same predictions are scored again by the host's ``vlpeft evaluate caption``: the figures must be
equal, so the image computes exactly what CI computes. Prints one JSON line with the figures and times.
Needs DOCKER_HOST pointing at a running daemon that has the image.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kfp import dsl, local
from kfp.dsl import Dataset, Input, Metrics, Model, Output

# The tiny world and backbones of the test suite (tests/conftest.py, tests/pretrain/test_pretrain_cli.py).
TINY_PARAMS = {
    "seed": 0,
    "world": {"image_size": 32, "n_train": 24, "n_val": 8, "n_test": 8, "corpus_scenes": 30},
    "pretrain": {
        "width": 32,
        "layers": 1,
        "heads": 2,
        "ffn": 64,
        "vit": {"image_size": 32, "patch_size": 8, "epochs": 1, "batch_size": 8},
        "text": {"steps": 4, "batch_size": 16},
    },
    "caption": {"epochs": 1, "batch_size": 16, "val_cider_images": 4, "bf16": False},
    "evaluate": {"batch_size": 16, "max_new_tokens": 8, "spice": "off"},
    "data": {"max_caption_tokens": 12},
}


def vlpeft(argv: list, params_yaml: str = "") -> None:
    """Run one ``vlpeft`` command in-process (with the run's params file, if given); raise on a failure."""
    import os
    import tempfile

    from vlpeft.cli import main

    if not params_yaml:
        code = main(argv)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(params_yaml)
        try:
            code = main([*argv, "--params", f.name])
        finally:
            os.unlink(f.name)
    if code:
        raise SystemExit(f"vlpeft {' '.join(argv[:2])} exited with {code}")


def make_pipeline(image: str):
    """The proof pipeline, every component running in ``image`` (no run-time pip: the image has kfp)."""

    def component(fn):
        return dsl.component(fn, base_image=image, install_kfp_package=False, additional_funcs=[vlpeft])

    @component
    def synth(params_yaml: str, data: Output[Dataset]):
        vlpeft(["data", "synth", "--out", data.path], params_yaml)

    @component
    def pretrain(params_yaml: str, data: Input[Dataset], models: Output[Model]):
        import os
        import tempfile

        metrics = os.path.join(tempfile.mkdtemp(), "pretrain.json")
        vlpeft(["pretrain", "--data", data.path, "--out", models.path, "--metrics", metrics], params_yaml)

    @component
    def features(params_yaml: str, data: Input[Dataset], models: Input[Model], store: Output[Dataset]):
        vlpeft(
            ["features", "--data", data.path, "--encoder", f"{models.path}/vit", "--out", store.path],
            params_yaml,
        )

    @component
    def train_caption(
        params_yaml: str,
        data: Input[Dataset],
        models: Input[Model],
        store: Input[Dataset],
        model: Output[Model],
    ):
        backbones = [f"model.vision={models.path}/vit", f"model.caption_backbone={models.path}/gpt2"]
        argv = ["train", "--task", "caption", "--data", data.path, "--features", store.path]
        sets = [a for s in backbones for a in ("--set", s)]
        vlpeft([*argv, "--out", model.path, *sets], params_yaml)

    @component
    def evaluate_caption(data: Input[Dataset], model: Input[Model], metrics: Output[Metrics]):
        import json
        import os
        import tempfile

        out = os.path.join(tempfile.mkdtemp(), "metrics.json")
        argv = ["evaluate", "caption", "--annotations", f"{data.path}/captions_test.json"]
        vlpeft([*argv, "--predictions", f"{model.path}/predictions_test.json", "--out", out])
        with open(out) as f:
            scores = json.load(f)
        for key, value in scores.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics.log_metric(key, value)
        with open(metrics.path, "w") as f:
            json.dump(scores, f)

    @dsl.pipeline(name="vlpeft-image-proof")
    def proof(params_yaml: str):
        d = synth(params_yaml=params_yaml)
        pre = pretrain(params_yaml=params_yaml, data=d.outputs["data"])
        fs = features(params_yaml=params_yaml, data=d.outputs["data"], models=pre.outputs["models"])
        tr = train_caption(
            params_yaml=params_yaml,
            data=d.outputs["data"],
            models=pre.outputs["models"],
            store=fs.outputs["store"],
        )
        evaluate_caption(data=d.outputs["data"], model=tr.outputs["model"])

    return proof


def task_dirs(root: Path) -> dict[str, Path]:
    """{task name: its output dir} of the one run under ``root`` (kfp.local's layout)."""
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("vlpeft-image-proof-")]
    return {p.name: p for p in run.iterdir() if p.is_dir()}


def host_scores(data: Path, model: Path) -> dict:
    """The host's ``vlpeft evaluate caption`` on the same files (the CI venv)."""
    from vlpeft.cli import main

    out = Path(tempfile.mkdtemp()) / "metrics.json"
    argv = ["evaluate", "caption", "--annotations", str(data / "captions_test.json"), "--spice", "off"]
    code = main([*argv, "--predictions", str(model / "predictions_test.json"), "--out", str(out)])
    if code:
        raise SystemExit(f"host vlpeft evaluate caption exited with {code}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", type=Path, required=True, help="scratch dir (replaced)")
    args = ap.parse_args(argv)

    shutil.rmtree(args.work, ignore_errors=True)
    root = args.work / "pipeline_root"
    root.mkdir(parents=True)
    # DockerRunner bind-mounts pipeline_root at the same path; the image's user (1000) must write it.
    root.chmod(0o777)
    local.init(
        runner=local.DockerRunner(
            network_mode="none", environment={"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
        ),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    params_yaml = yaml.safe_dump(TINY_PARAMS, sort_keys=False)
    start = time.perf_counter()
    make_pipeline(args.image)(params_yaml=params_yaml)
    seconds = time.perf_counter() - start

    dirs = task_dirs(root)
    in_image = json.loads((dirs["evaluate-caption"] / "metrics").read_text())
    host = host_scores(dirs["synth"] / "data", dirs["train-caption"] / "model")
    keys = [k for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if k in in_image]
    equal = all(in_image[k] == host[k] for k in keys)
    owners = {p.stat().st_uid for p in (dirs["synth"] / "data").rglob("*")}
    figures = {
        "pipeline_s": round(seconds, 1),
        "tasks": sorted(dirs),
        "metrics_in_image": {k: in_image[k] for k in keys},
        "equal_to_host": equal,
        "output_owner_uids": sorted(owners),
        "mlflow_db": (root / "mlflow.db").is_file(),
    }
    print(json.dumps(figures))
    if not equal:
        print(f"in-image scores differ from the host's: {in_image} vs {host}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
