"""Run our Kubeflow pipeline in a built image through ``kfp.local.DockerRunner`` (`make image-local`).

    python scripts/image/run_in_image.py --image localhost/vlpeft/vlpeft:0.1.0-cpu --work /tmp/x/run

The real pipeline of ``pipelines/`` and ``components/`` (built by ``build_pipeline``, as ``vlpeft kfp
compile`` does) on the tiny world with one task (captioning), one sweep worker, two sweep trials and the one
variant ``best``: data -> pretrain -> features -> sweep prepare / worker / finish -> train, which scores its
test split (pycocoevalcap's Java PTB tokenizer, METEOR, BLEU, ROUGE-L, CIDEr) -> collect -> summary ->
register -> review (compiled for a backend with a run workspace: kfp.backend 2.17.0). Every task is one
container of the image, run as its non-root user with ``--network none`` (nothing is fetched at run time, no
pip); MLflow tracks into a sqlite file and the Optuna study into a journal file, both on the bind-mounted
pipeline root (locally kfp ignores the Secrets these come from). Then the same test predictions are scored
again by the host's ``vlpeft evaluate caption``: the figures must be equal. Prints one JSON line with the
figures. Needs DOCKER_HOST pointing at a daemon with the image.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kfp import local

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # pipelines/ and components/ live at the checkout root

# The tiny world and backbones of the test suite (tests/conftest.py, tests/pretrain/test_pretrain_cli.py).
TINY_SETS = [
    "world.image_size=32", "world.n_train=24", "world.n_val=8", "world.n_test=8", "world.corpus_scenes=30",
    "pretrain.width=32", "pretrain.layers=1", "pretrain.heads=2", "pretrain.ffn=64",
    "pretrain.vit.image_size=32", "pretrain.vit.patch_size=8", "pretrain.vit.epochs=1",
    "pretrain.vit.batch_size=8", "pretrain.text.steps=4", "pretrain.text.batch_size=16",
    "caption.epochs=1", "caption.batch_size=16", "caption.val_cider_images=4", "caption.bf16=false",
    "evaluate.batch_size=16", "evaluate.max_new_tokens=8", "data.max_caption_tokens=12",
    "sweep.tasks=[caption]", "sweep.n_trials=2", "sweep.epochs=1", "sweep.max_train_samples=24",
    "sweep.rank=[4]", "sweep.routing=[none,vl]", "kfp.sweep_workers=1", "seeds=[0]", "kfp.backend=2.17.0",
    "kfp.allow_cpu=true",
]  # fmt: skip


def tiny_params(storage: str):
    """Validated params: params.yaml's defaults with the tiny overrides and a single variant (``best``)."""
    from vlpeft.config import load_params

    params = load_params([ROOT / "params.yaml"], [*TINY_SETS, f"sweep.storage={storage}"])
    return params.model_copy(update={"variants": {"best": params.variants["best"]}})


def host_scores(data: Path, predictions: Path) -> dict:
    """The host's ``vlpeft evaluate caption`` of the same predictions (the CI venv)."""
    from vlpeft.cli import main

    out = Path(tempfile.mkdtemp()) / "metrics.json"
    argv = ["evaluate", "caption", "--annotations", str(data / "captions_test.json"), "--spice", "off"]
    if main([*argv, "--predictions", str(predictions), "--out", str(out)]):
        raise SystemExit("host vlpeft evaluate caption failed")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--work", type=Path, required=True, help="scratch dir (replaced)")
    args = ap.parse_args(argv)

    from pipelines.compile import params_yaml_text
    from pipelines.vlpeft_pipeline import build_pipeline

    shutil.rmtree(args.work, ignore_errors=True)
    root, workspace = args.work / "pipeline_root", args.work / "workspace"
    for d in (root, workspace):
        d.mkdir(parents=True)
        d.chmod(0o777)  # bind-mounted into the containers, whose user (1000) writes them
    params = tiny_params(f"journal:{root}/sweep.journal")
    local.init(
        runner=local.DockerRunner(
            network_mode="none", environment={"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
        ),
        pipeline_root=str(root),
        workspace_root=str(workspace),
    )
    pipeline = build_pipeline(params, params_yaml_text(params), image=args.image)
    start = time.perf_counter()
    pipeline()
    seconds = time.perf_counter() - start

    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(f"{params.kfp.pipeline_name}-")]
    tasks = sorted(p.name for p in run.iterdir() if p.is_dir())
    (scores,) = run.glob("train*/model/metrics.json")
    (data,) = run.glob("data/data")
    (predictions,) = run.glob("train*/model/predictions_test.json")
    in_image, host = json.loads(scores.read_text())["test"], host_scores(data, predictions)
    keys = [k for k in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr") if k in in_image]
    equal = bool(keys) and all(in_image[k] == host[k] for k in keys)
    figures = {
        "pipeline_s": round(seconds, 1),
        "containers": len(tasks),
        "tasks": tasks,
        "metrics_in_image": {k: in_image[k] for k in keys},
        "equal_to_host": equal,
        "output_owner_uids": sorted({p.stat().st_uid for p in run.rglob("*")}),
        "mlflow_db": (root / "mlflow.db").is_file(),
    }
    print(json.dumps(figures))
    if not equal:
        print(f"in-image scores differ from the host's: {in_image} vs {host}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
