"""A paper-sized model end to end on this machine: QMC quantization's wall time and peak resident memory
(against the model's fp32 size), then WikiText-2 perplexity over noise seeds with the wall time of each
read and evaluation, and the FP reference on the same windows. Writes
benchmarks/results/large_model_<model>.json; benchmarks/large_model.md renders every such file.

    python benchmarks/large_model.py --model /path/qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf \\
        [--method qmc3] [--windows 2] [--context 1024] [--seeds 3] [--out FILE]
    python benchmarks/large_model.py --render-only

On a 2-core CPU the windows must be capped (about 70 tokens/s for the 1.5B model); on a GPU
(``--device cuda``) the whole test set is minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_label, status_kb, write_json  # noqa: E402

from qmc_edge.loaded import bos_for  # noqa: E402
from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model, storage_report  # noqa: E402
from qmc_edge.model.loading import load_model  # noqa: E402
from qmc_edge.model.perplexity import load_text, perplexity, tokenize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--method", default="qmc3")
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--label", default="", help="what code measured it, e.g. a commit (shown in the table)")
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    if args.render_only:
        render()
        return
    if not args.model:
        raise SystemExit("give --model PATH (a GGUF file or HF folder), or --render-only")
    t0 = time.perf_counter()
    lm = load_model(args.model, device=args.device)
    load_s = time.perf_counter() - t0
    fp32_mib = sum(p.numel() for p in lm.model.parameters()) * 4 / 2**20
    ids = tokenize(lm.tokenizer, load_text(None).text)
    bos = bos_for(lm.tokenizer)
    spec = parse_method(args.method)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on
    rss0 = status_kb("VmRSS")
    t = time.perf_counter()
    qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
    quantize_s = time.perf_counter() - t
    peak = status_kb("VmHWM")
    rep = storage_report(lm.model, spec, qm)
    seeds = []
    for s in range(args.seeds if spec.noisy else 1):
        t = time.perf_counter()
        qm.realise(lm.model, s if spec.noisy else None)
        realise_s = time.perf_counter() - t
        t = time.perf_counter()
        r = perplexity(lm.model, ids, args.context, args.windows or None, bos)
        seeds.append({"seed": s, "ppl": r.ppl, "realise_s": realise_s, "eval_s": time.perf_counter() - t})
        print(f"seed {s}: ppl {r.ppl:.3f} (realise {realise_s:.1f} s, eval {seeds[-1]['eval_s']:.0f} s)", flush=True)
    qm.restore(lm.model)
    t = time.perf_counter()
    fp = perplexity(lm.model, ids, args.context, args.windows or None, bos)
    payload = {
        "command": "python benchmarks/large_model.py " + " ".join(sys.argv[1:]),
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_label(args.device),
        "model": Path(args.model).name,
        "note": lm.note,
        "method": spec.name,
        "effective_bits": rep["effective_bits"],
        "fp32_MiB": fp32_mib,
        "load_s": load_s,
        "rss_before_MiB": rss0 / 1024,
        "peak_rss_MiB": peak / 1024,
        "quantize_s": quantize_s,
        "windows": r.windows,
        "context": args.context,
        "tokens_scored": r.tokens_scored,
        "seeds": seeds,
        "fp_ppl": fp.ppl,
        "fp_eval_s": time.perf_counter() - t,
    }
    out = args.out or HERE / "results" / f"large_model_{Path(args.model).stem}.json"
    write_json(out, payload)
    render()


def render() -> None:
    files = sorted((HERE / "results").glob("large_model_*.json"))
    lines = [
        "### A paper-sized model on this machine",
        "",
        "`benchmarks/large_model.py`: quantization wall time and peak resident memory (the kernel's high-water "
        "mark from just before quantizing; the loaded fp32 model is part of it), then WikiText-2 perplexity per "
        "noise seed on the first windows, and the FP reference (already quantized upstream) on the same windows.",
        "",
        "| model | method | code | date | machine | quantize s | peak RSS MiB | peak / fp32 size | windows x context "
        "| PPL per seed | FP PPL | realise s | eval s per seed |",
        "|---|---|---|---|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        ppl = ", ".join(f"{s['ppl']:.3f}" for s in d["seeds"])
        rs = sum(s["realise_s"] for s in d["seeds"]) / len(d["seeds"])
        es = sum(s["eval_s"] for s in d["seeds"]) / len(d["seeds"])
        lines.append(
            f"| {d['model']} | {d['method']} | {d['label'] or '-'} | {d['date'][:10]} | {d['machine']} | "
            f"{d['quantize_s']:.0f} | {d['peak_rss_MiB']:.0f} | {d['peak_rss_MiB'] / d['fp32_MiB']:.2f}x | "
            f"{d['windows']} x {d['context']} | {ppl} | {d['fp_ppl']:.3f} | {rs:.1f} | {es:.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"- `{json.loads(f.read_text())['command']}`" for f in files]
    tmp = HERE / "large_model.md.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(HERE / "large_model.md")


if __name__ == "__main__":
    main()
