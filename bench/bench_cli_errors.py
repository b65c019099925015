"""How long a mistyped path takes to be answered: ``vlpeft train --data <missing>`` as a user runs it.

Runs the console script several times (a fresh process each, as a shell does) and reports the median wall
time, and what the process imported (``python -X importtime``): torch, MLflow and Optuna must not be among
them. Prints one JSON object.

    .venv/bin/python bench/bench_cli_errors.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["train", "--task", "vqa", "--data", "no-such-dir", "--out", "out"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    exe = Path(sys.executable).with_name("vlpeft")
    walls = []
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            t0 = time.perf_counter()
            done = subprocess.run([str(exe), *ARGS], cwd=tmp, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            assert done.returncode == 2, done.stderr
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        probe = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "vlpeft", *ARGS],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
    modules = {line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines() if "|" in line}
    total_us = sum(
        int(line.split("|")[1])
        for line in probe.stderr.splitlines()
        if line.startswith("import time:")
        and line.split("|")[1].strip().isdigit()
        and not line.split("|")[-1].startswith("  ")
    )
    print(
        json.dumps(
            {
                "command": "vlpeft " + " ".join(ARGS),
                "error": probe.stderr.strip().splitlines()[-1],
                "wall_s_median": round(statistics.median(walls), 3),
                "wall_s_all": [round(w, 3) for w in walls],
                "cpu_s_mean": round(
                    (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / repeat, 3
                ),
                "import_s_top_level": round(total_us / 1e6, 3),
                "heavy_modules_imported": sorted(
                    m for m in ("torch", "mlflow", "optuna", "transformers") if m in modules
                ),
                "load_average": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
