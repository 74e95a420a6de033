"""Scoring speed of the zero-shot tasks on this machine: the FP reference on the first N items of
ARC-Easy, ARC-Challenge, BoolQ and HellaSwag, items per second per task (model loading excluded).
Writes benchmarks/results/tasks_speed_cpu.json (BENCHMARKS.md "Scoring speed").

    python benchmarks/tasks_speed.py --limit 500      # about 5 min on the 2-core CPU

Run it alone: another heavy job on 2 cores slows it far more than 2x.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import machine_label, write_json

from qmc_edge.methods import parse_method
from qmc_edge.model.loading import load_model
from qmc_edge.model.runner import EvalSettings, run_method
from qmc_edge.tasks.evaluate import load_tasks

HERE = Path(__file__).resolve().parent
TASKS = ("arc_easy", "arc_challenge", "boolq", "hellaswag")


def main() -> None:
    import datetime as dt
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    tasks = load_tasks(TASKS, a.limit)
    lm = load_model(None)
    row = run_method(lm, parse_method("fp"), None, EvalSettings(seeds=(0,)), tasks=tasks)
    write_json(
        HERE / "results" / "tasks_speed_cpu.json",
        {
            "command": "python benchmarks/tasks_speed.py " + " ".join(sys.argv[1:]),
            "date": dt.date.today().isoformat(),
            "machine": machine_label(),
            "model": Path(lm.source).name,
            "note": lm.note,
            "limit": a.limit,
            "items": {k: len(v) for k, v in tasks.items()},
            "wall_seconds": time.perf_counter() - t0,
            "rows": [row],
        },
    )


if __name__ == "__main__":
    main()
