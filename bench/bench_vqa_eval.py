"""Benchmark: VQA evaluation of 214k synthetic predictions, ours vs the official algorithm run as-is.

Both sides start from the same three JSON files on disk (questions, annotations, results), as the official
demo script does. "official" is the line-by-line transcription of GT-Vision-Lab/VQA's vqaEval.py for the
chosen revision: master (a013f00, tests/eval/vqa_official_master_ref.py; the default) or legacy (458a8b2,
tests/eval/vqa_official_legacy_ref.py), on the vqa.py transcription (tests/eval/vqa_official_api.py).
Prints one JSON object: times, ratio, and whether every number is identical; exits 1 if one is not.

    .venv/bin/python bench/bench_vqa_eval.py                      # 214,354 questions (VQAv2 val-sized)
    .venv/bin/python bench/bench_vqa_eval.py --revision legacy    # against the pre-a013f00 code
    .venv/bin/python bench/bench_vqa_eval.py --quick              # 5,000 questions, smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "eval"))  # the official transcription and the case generator

from vqa_cases import make_vqa  # noqa: E402
from vqa_official_api import OfficialVQA  # noqa: E402
from vqa_official_legacy_ref import OfficialVQAEvalLegacy  # noqa: E402
from vqa_official_master_ref import OfficialVQAEvalMaster  # noqa: E402

from vlpeft.eval import VqaGroundTruth, check_vqa_predictions, evaluate_vqa_files  # noqa: E402

FULL_SIZE = 214_354  # questions in VQAv2 val2014
REFERENCES = {"master": OfficialVQAEvalMaster, "legacy": OfficialVQAEvalLegacy}


class _Clock:
    """Wall-clock and CPU time of a block (CPU time: this process only, steadier on a shared machine)."""

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu


def _official(revision: str, q_path: Path, a_path: Path, p_path: Path) -> tuple[_Clock, dict, dict]:
    """The official demo script's steps; its objects are released inside the timing, as ours are."""
    with _Clock() as clock:
        # as the official VQA(annFile, quesFile) and loadRes(resFile, quesFile): the questions file twice
        vqa = OfficialVQA(json.loads(a_path.read_text()), json.loads(q_path.read_text()))
        vqa_res = vqa.loadRes(json.loads(p_path.read_text()), json.loads(q_path.read_text()))
        ev = REFERENCES[revision](vqa, vqa_res, n=2)
        ev.evaluate()
        accuracy, eval_qa = ev.accuracy, ev.evalQA
        del vqa, vqa_res, ev
    return clock, accuracy, eval_qa


def main() -> None:
    """Run the benchmark and print its JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 questions instead of 214,354")
    parser.add_argument("--n", type=int, default=None, help="number of questions (overrides --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", choices=sorted(REFERENCES), default="master")
    args = parser.parse_args()
    n = args.n or (5_000 if args.quick else FULL_SIZE)

    qfile, afile, results = make_vqa(n, seed=args.seed, duplicate_dicts=0.01)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{name}.json" for name in ("questions", "annotations", "results")]
        for path, data in zip(paths, (qfile, afile, results), strict=True):
            path.write_text(json.dumps(data))
        del qfile, afile, results

        with _Clock() as ours_clock:
            ours = evaluate_vqa_files(*paths, revision=args.revision)

        # the trainer's path: ground truth built once, then only scoring (e.g. once per epoch)
        annotations = json.loads(paths[1].read_text())["annotations"]
        gt = VqaGroundTruth.from_annotations(annotations, revision=args.revision)
        preds = check_vqa_predictions(json.loads(paths[2].read_text()), gt)
        with _Clock() as score_clock:
            gt.score(preds)
        del annotations, gt, preds

        official_clock, official_accuracy, official_eval_qa = _official(args.revision, *paths)

    accuracy = {k: v for k, v in ours.to_json().items() if k != "revision"}
    identical = accuracy == official_accuracy and ours.per_question_json() == {
        str(k): v for k, v in official_eval_qa.items()
    }
    report = {
        "bench": "vqa_eval",
        "revision": args.revision,
        "questions": n,
        "ours_s": round(ours_clock.wall_s, 3),
        "ours_cpu_s": round(ours_clock.cpu_s, 3),
        "ours_score_only_s": round(score_clock.wall_s, 3),
        "official_s": round(official_clock.wall_s, 3),
        "official_cpu_s": round(official_clock.cpu_s, 3),
        "speedup": round(official_clock.wall_s / ours_clock.wall_s, 2),
        "speedup_cpu": round(official_clock.cpu_s / ours_clock.cpu_s, 2),
        "identical": identical,
        "overall": ours.overall,
        "official_overall": official_accuracy["overall"],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "note": f"file-to-metrics times: reading the JSON files (the official script reads the questions "
        f"file twice), scoring, releasing the objects; official = the transcription of vqaEval.py "
        f"{args.revision}",
    }
    print(json.dumps(report, indent=2))
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
