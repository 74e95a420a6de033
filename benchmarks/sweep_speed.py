"""Sweep throughput: the same 8-point sweep on the embedded model with the local executor and with Ray
(1 and 2 local workers), points per hour and the speed-up, and the time a resume saves after a kill
half-way. Each run starts from an empty store (a temporary folder); the runs go one after another.

Writes benchmarks/results/sweep_speed.json and benchmarks/sweep_speed.md.

    python benchmarks/sweep_speed.py [--windows 2] [--context 512] [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_label, write_json  # noqa: E402

from qmc_edge.sweep.run import run_local  # noqa: E402
from qmc_edge.sweep.spec import SweepSpec, expand  # noqa: E402
from qmc_edge.sweep.store import Store  # noqa: E402

METHODS = ["rtn4", "rtn3", "mxint4", "emem3", "qmc:rho=0.005", "qmc:rho=0.01", "qmc:rho=0.02", "qmc2"]


class Killed(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    spec = SweepSpec.model_validate(
        {
            "name": "speed",
            "models": ["embedded"],
            "methods": METHODS,
            "eval": {"perplexity": {"context": args.context, "windows": args.windows}, "seeds": args.seeds},
        }
    )
    points = expand(spec)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        s = run_local(spec, points, Store(Path(tmp) / "local").create())
        runs["local"] = {"seconds": time.perf_counter() - t, "done": s.done, "failed": len(s.failed)}
        print(f"local: {runs['local']}", flush=True)

        def kill(done, failed, skipped, total, label):
            if done == len(points) // 2:
                raise Killed

        st = Store(Path(tmp) / "resume").create()
        t = time.perf_counter()
        try:
            run_local(spec, points, st, kill)
        except Killed:
            pass
        before = time.perf_counter() - t
        t = time.perf_counter()
        s = run_local(spec, points, st)
        runs["local, killed half-way then resumed"] = {
            "seconds_before_kill": before,
            "seconds_resume": time.perf_counter() - t,
            "done": s.done,
            "skipped": s.skipped,
        }
        print(f"resume: {runs['local, killed half-way then resumed']}", flush=True)
        try:
            from qmc_edge.sweep.ray_executor import run_ray

            for w in (1, 2):
                t = time.perf_counter()
                s = run_ray(spec, points, Store(Path(tmp) / f"ray{w}").create(), workers=w)
                runs[f"ray, {w} worker(s)"] = {
                    "seconds": time.perf_counter() - t,
                    "done": s.done,
                    "failed": len(s.failed),
                }
                print(f"ray {w}: {runs[f'ray, {w} worker(s)']}", flush=True)
        except ModuleNotFoundError:
            runs["ray"] = {"skipped": "ray is not installed (pip install 'qmc-edge[ray]')"}
    import datetime as dt

    payload = {
        "command": "python benchmarks/sweep_speed.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine_label(),
        "points": len(points),
        "methods": METHODS,
        "eval": spec.eval.model_dump(),
        "runs": runs,
    }
    write_json(HERE / "results" / "sweep_speed.json", payload)
    (HERE / "sweep_speed.md").write_text(render(payload), encoding="utf-8")


def render(d: dict) -> str:
    n = d["points"]
    ev = d["eval"]
    pp = ev["perplexity"]
    lines = [
        "## Sweep throughput (`qmc sweep`)",
        "",
        f"Command: `{d['command']}` ({d['date']}, {d['machine']}). {n} points on the embedded SmolLM2-135M "
        f"({', '.join(d['methods'])}), WikiText-2 {pp['windows']} x {pp['context']} tokens, {ev['seeds']} seeds; "
        "each run from an empty store, one after another. Ray workers run one point each with one thread; the "
        "local executor uses every core for one point at a time.",
        "",
        "| run | seconds | points per hour | speed-up vs local |",
        "|---|---:|---:|---:|",
    ]
    local = d["runs"]["local"]["seconds"]
    for name, r in d["runs"].items():
        if "seconds" in r:
            lines.append(
                f"| {name} | {r['seconds']:.0f} | {n / r['seconds'] * 3600:.0f} | {local / r['seconds']:.2f}x |"
            )
    r = d["runs"]["local, killed half-way then resumed"]
    lines += [
        "",
        f"Killed after {n // 2} points ({r['seconds_before_kill']:.0f} s), the resumed run skipped {r['skipped']} "
        f"and computed {r['done']} in {r['seconds_resume']:.0f} s: {local - r['seconds_resume']:.0f} s saved against "
        "starting again (the model load is paid again; the first half of this list is the cheap methods).",
        "",
    ]
    r1, r2 = d["runs"].get("ray, 1 worker(s)"), d["runs"].get("ray, 2 worker(s)")
    if r1 and r2:
        lines += [
            f"Two Ray workers are {r1['seconds'] / r2['seconds']:.2f}x one worker, but only "
            f"{local / r2['seconds']:.2f}x the local executor: on one machine the local executor already uses "
            "both cores inside each point (torch's threads), so Ray pays off across machines or GPUs, not here.",
            "",
        ]
    if "ray" in d["runs"]:
        lines += [d["runs"]["ray"]["skipped"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
