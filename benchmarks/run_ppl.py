"""WikiText-2 perplexity benchmark on the embedded model; writes benchmarks/results/ppl.json and
regenerates BENCHMARKS.md.

    python benchmarks/run_ppl.py                 # 40 windows of 2048, 3 seeds (about 50 min here)
    python benchmarks/run_ppl.py --windows 0     # the whole test set (about 9 min per row and seed)

Every row is evaluated on the same windows. Rows follow the QMC end-to-end issue.
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
from qmc_edge.perplexity import bos_for, load_text, tokenize

HERE = Path(__file__).resolve().parent
ROWS = [
    "fp",
    "rtn4",
    "rtn3",
    "mxint4",
    "emem3",
    "qmc:bits=3,cell_bits=3,rho=0.005",
    "qmc:bits=3,cell_bits=3,rho=0.01",
    "qmc:bits=3,cell_bits=3,rho=0.01,ideal_memory=true",
    "qmc:bits=3,cell_bits=3,rho=0.02",
    "qmc:bits=2,cell_bits=2,rho=0.01",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=40, help="windows of --context (0 = all)")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", nargs="*", default=ROWS, help="method specs")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ppl.json")
    ap.add_argument("--device", default="cpu", help="where the model runs (quantization and noise stay on the CPU)")
    ap.add_argument("--no-render", action="store_true", help="do not regenerate BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lm = load_model(None, device=args.device)
    src = load_text()
    ids = tokenize(lm.tokenizer, src.text)
    cfg = EvalSettings(args.context, args.windows or None, tuple(range(args.seeds)), bos_for(lm.tokenizer))
    rows: list[dict] = []
    t0 = time.time()

    def payload(done: bool) -> dict:
        return {
            "benchmark": "wikitext2_ppl",
            "complete": done,
            "command": "python benchmarks/run_ppl.py " + " ".join(sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_label(args.device),
            "model": lm.source,
            "note": lm.note,
            "text": src.label,
            "context": args.context,
            "windows": rows[0]["eval"]["windows"],
            "windows_available": rows[0]["eval"]["windows_available"],
            "seeds": list(cfg.seeds),
            "wall_seconds": time.time() - t0,
            "rows": rows,
        }

    for spec_text in args.rows:
        spec = parse_method(spec_text)
        r = run_method(lm, spec, ids, cfg)
        rows.append(r)
        print(
            f"{r['method']:42s} eff {r['effective_bits']:.3f}  PPL {r['ppl_mean']:.3f} ± {r['ppl_std']:.3f}"
            f"  quant {r['quantize_seconds']:.1f}s  [{time.time() - t0:.0f}s]",
            flush=True,
        )
        # Saved after every row: a run cut short keeps what it measured (marked incomplete).
        write_json(args.out, payload(done=False))
    write_json(args.out, payload(done=True))
    if args.no_render:
        return
    from render import render  # noqa: PLC0415 - sibling script

    render()


if __name__ == "__main__":
    main()
