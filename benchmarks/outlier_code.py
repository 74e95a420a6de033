"""Outlier codes: symmetric (code x scale over [-amax, amax]) against offset (sign + magnitude above
the outlier threshold), at 3, 4, 6 and 8 bits per outlier, on a real model.

QMC 3b (3 bits/cell, rho=0.01, nearest rounding) is quantized once; the inliers do not depend on
how the outliers are coded (the split fixes them), so each variant swaps only the outlier tables,
which is exactly what ``qmc:...,outlier_bits=B,outlier_code=C`` quantizes (checked on the first
tensor below). Reported: the outliers' mean squared error against the reference weights, the bits
per weight of the quantized layers, and the noise-free WikiText-2 perplexity (outliers live in
MRAM, which is error-free by default, so the code changes only the deterministic error).

Writes benchmarks/results/outlier_code_<model>.json and benchmarks/outlier_code.md.
Usage: python benchmarks/outlier_code.py [--model PATH] [--windows 4] [--context 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load_for_ppl, run_header, write_json  # noqa: E402

from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model, storage_report  # noqa: E402
from qmc_edge.model.perplexity import perplexity  # noqa: E402
from qmc_edge.quant.qmodel import QuantizedModel  # noqa: E402
from qmc_edge.quant.stages.outliers import outlier_table  # noqa: E402

BITS = [3, 4, 6, 8]
CODES = ["symmetric", "offset"]
BASE = "qmc:bits=3,cell_bits=3,rho=0.01"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    lm, src, ids, bos, model_name = load_for_ppl(args.model, args.threads)
    base = quantize_model(lm.model, parse_method(BASE), tokenizer=lm.tokenizer)
    fp = perplexity(lm.model, ids, args.context, args.windows, bos).ppl
    rows = []
    for bits in BITS:
        for code in CODES:
            spec = parse_method(f"{BASE},outlier_bits={bits},outlier_code={code}")
            tensors, se, n = {}, 0.0, 0
            for name, qt in base.tensors.items():
                o = qt.outliers
                v = base.reference[name].float().reshape(-1)[o.index]
                table = outlier_table(o.index, v, bits, code)
                tensors[name] = replace(qt, outliers=table)
                se += float(((table.values() - v) ** 2).sum())
                n += o.count
            if not rows:  # the swap is what quantizing with the options gives: check one tensor
                first = next(iter(base.tensors))
                direct = spec.quantize_tensor(base.reference[first])
                assert torch.equal(direct.dequantize(), tensors[first].dequantize()), "swap != quantize"
            qm = QuantizedModel(spec, tensors, base.quantize_seconds, base.reference)
            qm.realise(lm.model, None)
            ppl = perplexity(lm.model, ids, args.context, args.windows, bos).ppl
            qm.restore(lm.model)
            rep = storage_report(lm.model, spec, qm)
            row = {
                "outlier_bits": bits,
                "outlier_code": code,
                "method": spec.name,
                "outlier_mse": se / n,
                "outliers": n,
                "effective_bits": rep["effective_bits"],
                "ppl": ppl,
            }
            print(f"{spec.name}: mse {row['outlier_mse']:.3e}, {row['effective_bits']:.4f} b/w, PPL {ppl:.3f}")
            rows.append(row)
    payload = dict(
        run_header("outlier_code.py", model_name, lm.note, src.label, args.context, args.windows, t0),
        fp_ppl=fp,
        base=BASE,
        rows=rows,
    )
    res = HERE / "results" / f"outlier_code_{model_name}.json"
    write_json(res, payload)
    write_md()
    print(f"wrote {res}")


def section(d: dict) -> str:
    lines = [
        f"### Outlier codes: {d['model']}",
        "",
        f"- command: `{d['command'].strip()}`",
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min",
        f"- model: {d['note']}",
        f"- text: {d['text']}, first {d['windows']} windows of {d['context']} tokens; FP {d['fp_ppl']:.3f}; "
        f"`{d['base']}`, noise-free reads (outliers are in MRAM; the inliers are the same in every row)",
        "",
        "| outlier bits | code | outlier MSE | bits/weight (quantized layers) | PPL |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['outlier_bits']} | {r['outlier_code']} | {r['outlier_mse']:.3e} | "
            f"{r['effective_bits']:.4f} | {r['ppl']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_md() -> None:
    parts = ["## Outlier codes: symmetric against offset", ""]
    for p in sorted((HERE / "results").glob("outlier_code_*.json")):
        parts.append(section(json.loads(p.read_text(encoding="utf-8"))))
    md = HERE / "outlier_code.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(md)
    import render

    render.render()


if __name__ == "__main__":
    if sys.argv[1:] == ["--render-only"]:
        write_md()
    else:
        main()
