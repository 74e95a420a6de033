"""Quantization under contention: each method's wall time idle and while another process computes on
every core, with per-tensor workers (the default, :mod:`qmc_edge.parallel`) and with torch's intra-op
threads only (``QMC_QUANT_WORKERS=1``, how every version before 2026-12-01 ran), side by side in one
process. Also one noisy read of every tensor (``realise``), which each seed pays. Writes
benchmarks/results/contention.json and benchmarks/contention.md.

    python benchmarks/contention.py [--methods rtn3 qmc3 emem3] [--threads 2]

The competing process is what a second benchmark or a user's other job is: torch matmuls on all
cores (torch's default thread count), started before and stopped after each contended measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from common import machine_label, write_json  # noqa: E402

from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model  # noqa: E402
from qmc_edge.model.loading import load_model  # noqa: E402

COMPETITOR = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a * 1e-3)\n"
MODES = {"workers": None, "intra-op threads only": "1"}  # QMC_QUANT_WORKERS


def timed(lm, spec, mode_env: str | None) -> tuple[float, float]:
    """(quantize seconds, one realise's seconds) with QMC_QUANT_WORKERS as given."""
    if mode_env is None:
        os.environ.pop("QMC_QUANT_WORKERS", None)
    else:
        os.environ["QMC_QUANT_WORKERS"] = mode_env
    t = time.perf_counter()
    qm = quantize_model(lm.model, spec)
    q = time.perf_counter() - t
    t = time.perf_counter()
    qm.realise(lm.model, 0 if spec.noisy else None)
    r = time.perf_counter() - t
    qm.restore(lm.model)
    return q, r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="*", default=["rtn3", "qmc3", "emem3"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(None)
    timed(lm, parse_method("rtn4"), None)  # warm-up: first-call costs off the first method
    rows = []
    t0 = time.time()
    for m in args.methods:
        spec = parse_method(m)
        for mode, env in MODES.items():
            idle_q, idle_r = timed(lm, spec, env)
            comp = subprocess.Popen([sys.executable, "-c", COMPETITOR])
            try:
                time.sleep(2.0)  # the competitor is computing before the clock starts
                busy_q, busy_r = timed(lm, spec, env)
            finally:
                comp.kill()
                comp.wait()
            rows.append(
                {
                    "method": spec.name,
                    "spec": m,
                    "mode": mode,
                    "idle_s": idle_q,
                    "contended_s": busy_q,
                    "slowdown": busy_q / idle_q,
                    "realise_idle_s": idle_r,
                    "realise_contended_s": busy_r,
                }
            )
            print(f"{spec.name:34s} {mode:22s} idle {idle_q:6.1f} s  contended {busy_q:6.1f} s", flush=True)
    os.environ.pop("QMC_QUANT_WORKERS", None)
    payload = {
        "command": "python benchmarks/contention.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_label(),
        "threads": args.threads,
        "model": lm.source,
        "note": lm.note,
        "competitor": COMPETITOR,
        "wall_seconds": time.time() - t0,
        "rows": rows,
    }
    write_json(HERE / "results" / "contention.json", payload)
    (HERE / "contention.md").write_text(render(payload), encoding="utf-8")


def render(d: dict) -> str:
    lines = [
        "### Quantization under contention",
        "",
        f"`{d['command']}` on {d['date']} ({d['machine']}, torch threads {d['threads']}). Model: {d['note']}. Each "
        "method idle, then while a second process runs torch matmuls on every core, one after the other in one "
        "process; *workers*: one tensor per thread with single-threaded ops (the default); *intra-op threads "
        "only*: `QMC_QUANT_WORKERS=1`, every op spread over torch's threads (as before 2026-12-01). Realise: one "
        "noisy read of every quantized tensor (paid per seed).",
        "",
        "| method | mode | quantize idle s | contended s | slowdown | realise idle s | contended s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['idle_s']:.1f} | {r['contended_s']:.1f} | {r['slowdown']:.2f}x | "
            f"{r['realise_idle_s']:.2f} | {r['realise_contended_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
