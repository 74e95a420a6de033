"""Quick screen of the QMC group size (ideal memory, 3-bit inliers, 1% outliers): per group size,
perplexity with the clip search (20 ratios) and with plain min-max, on the first windows of WikiText-2.
Writes benchmarks/results/group_size.json (BENCHMARKS.md "Choice of the default group size").

python benchmarks/group_size.py            # 3 windows of 2048, about 5 min here
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from common import run_header, write_json

from qmc_edge.loaded import bos_for
from qmc_edge.methods import parse_method
from qmc_edge.model.loading import load_model
from qmc_edge.model.perplexity import load_text, tokenize
from qmc_edge.model.runner import EvalSettings, run_method


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    lm = load_model(None)
    ids = tokenize(lm.tokenizer, load_text().text)
    cfg = EvalSettings(2048, args.windows, (0,), bos_for(lm.tokenizer))
    rows = ["fp", "rtn3", "qmc:bits=3,rho=0,ideal_memory=true"]
    for g in (0, 64, 128, 256):
        for n_clip in (20, 1):
            rows.append(f"qmc:bits=3,group_size={g},n_clip={n_clip},ideal_memory=true")
    t0 = time.perf_counter()
    out = []
    for m in rows:
        r = run_method(lm, parse_method(m), ids, cfg)
        print(f"{m:55s} eff {r['effective_bits']:.3f}  PPL {r['ppl_mean']:.3f}", flush=True)
        out.append({"method_text": m, "effective_bits": r["effective_bits"], "ppl": r["ppl_mean"]})
    head = run_header("group_size.py", Path(lm.source).name, lm.note, "wikitext-2 test", 2048, args.windows, t0)
    write_json(Path(__file__).resolve().parent / "results" / "group_size.json", {**head, "rows": out})


if __name__ == "__main__":
    main()
