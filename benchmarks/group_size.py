"""Quick screen of the QMC group size (ideal memory): the numbers in benchmarks/notes.md.

python benchmarks/group_size.py            # 3 windows of 2048, about 5 min here
"""

from __future__ import annotations

import argparse
import os

import torch

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
    for m in rows:
        r = run_method(lm, parse_method(m), ids, cfg)
        print(f"{m:55s} eff {r['effective_bits']:.3f}  PPL {r['ppl_mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
