"""Zero-shot reasoning benchmark on the embedded model; writes benchmarks/results/tasks.json and
regenerates BENCHMARKS.md.

    python benchmarks/run_tasks.py                # first 500 items of each task, 2 seeds for noisy rows
    python benchmarks/run_tasks.py --limit 0      # the full sets (hours on a 2-core CPU)

Rows are the methods of the compare table; every row sees the same items. Scored as
lm-evaluation-harness scores them (tests/test_lmeval_parity.py checks per-item equality).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch
from common import machine_label

from qmc_edge.experiment import EvalSettings, run_method
from qmc_edge.jsonio import write_json
from qmc_edge.methods import parse_method
from qmc_edge.model_io import load_model
from qmc_edge.tasks.data import TASKS
from qmc_edge.tasks.evaluate import load_tasks

HERE = Path(__file__).resolve().parent
ROWS = ["fp", "rtn4", "rtn3", "mxint4", "emem3", "qmc3", "qmc2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="first N items per task (0 = all)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rows", nargs="*", default=ROWS, help="method specs")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tasks.json")
    ap.add_argument("--device", default="cpu", help="where the model runs (quantization and noise stay on the CPU)")
    ap.add_argument("--no-render", action="store_true", help="do not regenerate BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lm = load_model(None, device=args.device)
    machine = machine_label(args.device)
    tasks = load_tasks(args.tasks, args.limit or None)
    cfg = EvalSettings(seeds=tuple(range(args.seeds)))
    rows: list[dict] = []
    t0 = time.time()

    def payload(done: bool) -> dict:
        return {
            "benchmark": "zero_shot_tasks",
            "complete": done,
            "command": "python benchmarks/run_tasks.py " + " ".join(sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "model": lm.source,
            "note": lm.note,
            "limit": args.limit or None,
            "items": {k: len(v) for k, v in tasks.items()},
            "seeds": list(cfg.seeds),
            "wall_seconds": time.time() - t0,
            "rows": rows,
        }

    for spec_text in args.rows:
        r = run_method(lm, parse_method(spec_text), None, cfg, tasks=tasks)
        rows.append(r)
        accs = "  ".join(
            f"{k} {100 * v['acc']:.1f}" + (f"/{100 * v['acc_norm']:.1f}" if "acc_norm" in v else "")
            for k, v in r["tasks"].items()
        )
        print(f"{r['method']:40s} {accs}  [{time.time() - t0:.0f}s]", flush=True)
        write_json(args.out, payload(done=False))  # a run cut short keeps its rows, marked incomplete
    write_json(args.out, payload(done=True))
    if args.no_render:
        return
    from render import render  # noqa: PLC0415 - sibling script

    render()


if __name__ == "__main__":
    main()
