"""Noise cost: the perplexity that device errors add to the *same codes* read noise-free, and what the
code-to-level map (``level_map=true``) does to it, at deployment ages from fresh to one day.

Each configuration is quantized once; its codes are then read noise-free (``realise(None)``) and as
3 chips (noise seeds 0, 1, 2), all on the same windows. Noise cost = mean noisy perplexity / clean
perplexity - 1 (the issue's target: <= 5%). With the level map, the clean read is of the same
logical codes (the map changes which cell pattern holds a code, and the clip search may pick
another grid for it, so the clean perplexities of the two rows can differ slightly).

Writes benchmarks/results/noise_cost_<model>.json and benchmarks/noise_cost.md.
Usage: python benchmarks/noise_cost.py [--model PATH] [--windows 8] [--context 1024]
       [--configs METHOD ...] [--append]   (--append: add or replace these configurations' rows in the
       existing results, measured on the same windows; each appended row keeps its own command and date)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load_for_ppl, results_name, run_header, write_json  # noqa: E402

from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model, storage_report  # noqa: E402
from qmc_edge.model.perplexity import perplexity  # noqa: E402

CONFIGS = [
    "qmc:bits=3,cell_bits=3,rho=0.01",
    "qmc:bits=3,cell_bits=3,rho=0.01,level_map=true",
    "qmc:bits=3,cell_bits=3,rho=0.01,age=1d,target_age=1d",
    "qmc:bits=3,cell_bits=3,rho=0.01,age=1d,target_age=1d,level_map=true",
    "qmc:bits=4,cell_bits=2,rho=0.01,age=1d,target_age=1d",
    "qmc:bits=4,cell_bits=2,rho=0.01,age=1d,target_age=1d,level_map=true",
]
SEEDS = (0, 1, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--append", action="store_true", help="merge these rows into the existing results")
    args = ap.parse_args()
    t0 = time.perf_counter()
    old = _previous(args) if args.append else None  # checked before the model loads
    lm, src, ids, bos, model_name = load_for_ppl(args.model, args.threads)
    fp = perplexity(lm.model, ids, args.context, args.windows, bos).ppl
    res = HERE / "results" / f"noise_cost_{model_name}.json"
    # Checked before any quantization. Another CPU may sum in another order: FP perplexity then moves
    # in the 5th-6th digit (seen: 29.18486 vs 29.18510 on two machines); another model or text, far more.
    if old is not None and (old["model"] != model_name or abs(old["fp_ppl"] / fp - 1) > 1e-4):
        raise SystemExit(f"--append: {res} is of another model or text (FP {old['fp_ppl']} vs {fp})")
    rows = []
    for text in args.configs:
        spec = parse_method(text)
        tq = time.perf_counter()
        qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
        tq = time.perf_counter() - tq
        rep = storage_report(lm.model, spec, qm)

        def ppl(seed, qm=qm):
            qm.realise(lm.model, seed)
            try:
                return perplexity(lm.model, ids, args.context, args.windows, bos).ppl
            finally:
                qm.restore(lm.model)

        clean = ppl(None)
        noisy = [ppl(s) for s in SEEDS]
        mapped = sum(qt.level_map is not None for qt in qm.tensors.values())
        row = {
            "method": spec.name,
            "method_text": text,
            "device": spec.cells().describe(),
            "effective_bits": rep["effective_bits"],
            "tensors_with_level_map": mapped,
            "tensors": len(qm.tensors),
            "quantize_seconds": tq,
            "clean_ppl": clean,
            "noisy_ppl": noisy,
            "noisy_mean": statistics.fmean(noisy),
            "noisy_std": statistics.stdev(noisy),
            "noise_cost": statistics.fmean(noisy) / clean - 1,
        }
        if args.append:
            row["measured_by"] = "python benchmarks/noise_cost.py " + " ".join(sys.argv[1:])
            row["fp_ppl"] = fp  # this run's FP on the same windows
            row["date"] = time.strftime("%Y-%m-%d")
        print(
            f"{spec.name}: clean {clean:.3f}, noisy {row['noisy_mean']:.3f} ± {row['noisy_std']:.3f} "
            f"(+{100 * row['noise_cost']:.1f}%), {mapped}/{len(qm.tensors)} tensors mapped",
            flush=True,
        )
        rows.append(row)
    payload = dict(
        run_header("noise_cost.py", model_name, lm.note, src.label, args.context, args.windows, t0),
        fp_ppl=fp,
        seeds=list(SEEDS),
        rows=rows,
    )
    if old is not None:
        new = {r["method_text"] for r in rows}
        payload = {**old, "rows": [r for r in old["rows"] if r["method_text"] not in new] + rows}
    write_json(res, payload)
    write_md()
    print(f"wrote {res}")


def _previous(args: argparse.Namespace) -> dict:
    """The results --append adds to: they must exist and have been measured on the same windows."""
    res = HERE / "results" / f"noise_cost_{results_name(args.model)}.json"
    if not res.is_file():
        raise SystemExit(f"--append: no {res.name} in benchmarks/results; run without --append first")
    d = json.loads(res.read_text(encoding="utf-8"))
    if (d["windows"], d["context"]) != (args.windows, args.context):
        raise SystemExit(
            f"--append: {res.name} was measured on {d['windows']} x {d['context']} tokens; pass "
            f"--windows {d['windows']} --context {d['context']}"
        )
    return d


def section(d: dict) -> str:
    lines = [
        f"### {d['model']}",
        "",
        f"- command: `{d['command'].strip()}`",
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min",
        f"- model: {d['note']}",
        f"- text: {d['text']}, first {d['windows']} windows of {d['context']} tokens; FP {d['fp_ppl']:.3f}; "
        f"noisy = mean ± std over chips {d['seeds']}; clean = the same codes read without error",
        "",
        "| configuration | bits/weight | tensors mapped | clean PPL | noisy PPL | noise cost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['method']} | {r['effective_bits']:.4f} | {r['tensors_with_level_map']}/{r['tensors']} | "
            f"{r['clean_ppl']:.3f} | {r['noisy_mean']:.3f} ± {r['noisy_std']:.3f} | {100 * r['noise_cost']:+.1f}% |"
        )
    later = [r for r in d["rows"] if "measured_by" in r]
    if later:
        lines.append("")
        lines += [f"- {r['method']}: added {r['date']} by `{r['measured_by']}`" for r in later]
    return "\n".join(lines) + "\n"


def write_md() -> None:
    parts = ["## Noise cost and the code-to-level map", ""]
    for p in sorted((HERE / "results").glob("noise_cost_*.json")):
        parts.append(section(json.loads(p.read_text(encoding="utf-8"))))
    md = HERE / "noise_cost.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(md)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render-only"]:
        write_md()
    else:
        main()
