"""Quantization cost of GPTQ, AWQ (llm-compressor), HQQ (hqq), RTN, QMC and QMC+GPTQ on the embedded
model, side by side in one process: wall time and peak resident memory. Writes
benchmarks/results/cost.json and benchmarks/cost.md. (Their accuracy is the sweep
benchmarks/sweeps/baselines.yaml, rendered from benchmarks/store.)

    python benchmarks/cost.py                  # 16 x 512 calibration tokens, as the baselines sweep
    python benchmarks/cost.py --timing-pass    # wall times again with glibc's default allocator
    python benchmarks/cost.py --render-only    # rewrite cost.md from the JSON

Needs the extras: pip install 'qmc-edge[gptq,hqq]'.

Peak memory is read from the kernel's high-water mark, which only sees pages a method touches beyond
what the process already holds. glibc's dynamic mmap threshold keeps freed multi-MB tensors in the heap
for reuse, so a method measured after a larger one showed +0 MB. Run with a fixed threshold
(``MALLOC_MMAP_THRESHOLD_=131072``, glibc's static default) so freed tensors go back to the kernel
and every method's peak is its own; the JSON records the setting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from common import status_kb

from qmc_edge.jsonio import write_json
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.model.loading import load_model
from qmc_edge.model.perplexity import load_text

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "results" / "cost.json"
OUT_MD = HERE / "cost.md"
COST_ROWS = ["rtn4", "rtn3", "qmc3", "qmc3-gptq", "gptq4", "gptq3", "awq4", "awq3", "hqq4", "hqq3"]


def _spec(text: str, calib: dict):
    """The method, with this run's calibration size when it calibrates."""
    spec = parse_method(text)
    return parse_method(text, **calib) if spec.calibrated else spec


def measure_quantize(lm, spec_text: str, calib: dict) -> dict:
    """Wall time and peak resident memory of one quantization, the peak read from the kernel's
    high-water mark (VmHWM) after resetting it (``clear_refs`` 5), so methods measured one after
    another in one process do not inherit each other's peaks."""
    spec = _spec(spec_text, calib)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    rss0 = status_kb("VmRSS")
    t0 = time.perf_counter()
    qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
    wall = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    rep = storage_report(lm.model, spec, qm)
    row = {
        "method": spec.name,
        "spec": spec_text,
        "quantize_seconds": wall,
        "rss_before_MB": rss0 / 1024,
        "peak_rss_MB": peak / 1024,
        "peak_increase_MB": (peak - rss0) / 1024,
        "effective_bits": rep["effective_bits"],
        "info": qm.info,
    }
    del qm
    gc.collect()
    return row


def calibration_overlap(src_text: str) -> dict:
    """13-gram overlap of the calibration text with every evaluation set that is present."""
    from qmc_edge.quant.calibration import calibration_text, ngram_overlap

    calib = calibration_text()
    out = {"wikitext-2 test (evaluation text)": ngram_overlap(calib, src_text)}
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    readers = {
        "boolq dev passages": ("boolq/dev.jsonl", lambda r: r["passage"] + " " + r["question"]),
        "hellaswag val": ("hellaswag/hellaswag_val.jsonl", lambda r: r["ctx"] + " " + " ".join(r["endings"])),
        "arc easy test": ("arc/ARC-Easy-Test.jsonl", lambda r: json.dumps(r["question"])),
        "arc challenge test": ("arc/ARC-Challenge-Test.jsonl", lambda r: json.dumps(r["question"])),
    }
    for label, (rel, get) in readers.items():
        p = data / rel
        if p.is_file():
            text = " ".join(get(json.loads(line)) for line in p.read_text(encoding="utf-8").splitlines() if line)
            out[label] = ngram_overlap(calib, text)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cost-rows", nargs="*", default=COST_ROWS, help="method specs for the cost table")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument(
        "--timing-pass",
        action="store_true",
        help="time the cost rows again with glibc's default allocator settings, add them to the JSON",
    )
    args = ap.parse_args()
    if args.render_only:
        render()
        return
    if args.timing_pass:
        timing_pass(args)
        return
    torch.set_num_threads(args.threads)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    calib = {"calib_samples": args.calib_samples, "calib_len": args.calib_len}
    lm = load_model(None)
    t0 = time.time()
    payload = {
        "benchmark": "quantization_cost",
        "complete": False,
        "command": "python benchmarks/cost.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} CPU",
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "model": lm.source,
        "note": lm.note,
        "calibration_overlap_13gram": calibration_overlap(load_text().text),
        "cost": [],
    }

    def save(done: bool = False) -> None:
        payload["wall_seconds"] = time.time() - t0
        payload["load_average_end"] = os.getloadavg()
        payload["complete"] = done
        write_json(OUT_JSON, payload)  # after every row: a run cut short keeps what it measured

    # The first quantization in a process pays one-off costs (page faults of fresh allocations, thread
    # pools): measured 132 s for RTN-INT4 first vs about 25 s after. An untimed warm-up run keeps that
    # off whichever method comes first. QMC's compiled clip search is compiled (or loaded from numba's
    # on-disk cache) on its first use: timed here on its own, once per install, not per quantization.
    payload["kernel_first_use_seconds"] = _kernel_first_use()
    payload["warmup"] = measure_quantize(lm, "rtn4", calib)
    for spec_text in args.cost_rows:
        row = measure_quantize(lm, spec_text, calib)
        payload["cost"].append(row)
        print(
            f"{row['method']:34s} quantize {row['quantize_seconds']:7.1f} s  peak +{row['peak_increase_MB']:7.0f} MB"
            f"  eff {row['effective_bits']:.3f}  [{time.time() - t0:.0f}s]",
            flush=True,
        )
        save()
    save(done=True)
    render()


def _kernel_first_use() -> float:
    """Seconds of the first call of QMC's compiled clip search (both searches; compiling, or loading
    numba's cache), so that no timed row pays it."""
    from qmc_edge.quant.uniform import clip_grid, quantize_uniform

    t = time.perf_counter()
    for search in ("grid", "descent"):
        quantize_uniform(torch.randn(4, 256), 3, 128, clip_ratios=clip_grid(20), search=search)
    return time.perf_counter() - t


def timing_pass(args) -> None:
    """Wall times of the cost rows with the allocator as users run it (no fixed mmap threshold, which
    makes allocation-heavy code pay a page fault per large tensor: QMC 3b took 122 s with it, 32 s
    without). Peak memory stays the fixed-threshold run's; the two go side by side in the table."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        raise SystemExit("--timing-pass measures the default allocator: unset MALLOC_MMAP_THRESHOLD_")
    d = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    torch.set_num_threads(args.threads)
    calib = {"calib_samples": args.calib_samples, "calib_len": args.calib_len}
    lm = load_model(None)
    _kernel_first_use()
    t0 = time.time()
    rows = []
    for spec_text in ["rtn4", *args.cost_rows]:  # the first is an untimed warm-up, as in main()
        spec = _spec(spec_text, calib)
        t = time.perf_counter()
        qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
        rows.append({"method": spec.name, "spec": spec_text, "quantize_seconds": time.perf_counter() - t})
        del qm
        gc.collect()
        print(f"{spec.name:34s} quantize {rows[-1]['quantize_seconds']:7.1f} s  [{time.time() - t0:.0f}s]", flush=True)
    d["timing"] = {
        "command": "python benchmarks/external.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
        "rows": rows[1:],
    }
    write_json(OUT_JSON, d)
    render()


def render() -> None:
    """benchmarks/cost.md from the JSON: what was run and the cost table."""
    d = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    calib = next((c["info"]["calibration"] for c in d["cost"] if c["info"].get("calibration")), None)
    lib = next((c["info"]["library"] for c in d["cost"] if c["info"].get("library")), None)
    lines = [
        "## Library baselines: GPTQ, AWQ (llm-compressor) and HQQ (hqq)",
        "",
        f"Quantization cost: `{d['command']}` on {d['date']} ({d['machine']}; load average "
        f"{d['load_average_start'][0]:.1f} at the start, {d['load_average_end'][0]:.1f} at the end: the machine was "
        "shared, so times are upper bounds).",
        f"Model: {d['model']} ({d['note']}).",
    ]
    if calib:
        ov = ", ".join(f"{k} {v:.2e}" for k, v in d["calibration_overlap_13gram"].items())
        lines.append(
            f"GPTQ/AWQ calibration: {calib['samples']} windows of {calib['seq_len']} tokens (seed {calib['seed']}) "
            f"from {calib['text']}; share of its 13-grams found in the evaluation sets: {ov}."
        )
    if lib:
        lines.append("Libraries: " + ", ".join(f"{k} {v}" for k, v in lib.items()) + ".")
    timing = {t["method"]: t["quantize_seconds"] for t in d.get("timing", {}).get("rows", [])}
    fixed = d.get("malloc_mmap_threshold")
    lines += [
        "",
        "Quantization cost, measured one after another in one process (wall time; peak resident memory above "
        "the resident size before the call, from the kernel's high-water mark reset before each method; "
        "GPTQ/AWQ include a deep copy of the model that the library edits)"
        + (
            f". Memory was measured with glibc's mmap threshold fixed at {fixed} bytes (MALLOC_MMAP_THRESHOLD_), so "
            "freed tensors return to the kernel and each peak is the method's own; that makes allocation-heavy "
            "code slower, so wall times come from a second pass with the default allocator"
            + (
                f" (`{d['timing']['command']}`, {d['timing']['date']}; '-': not in that pass)"
                if timing
                else " (`--timing-pass`, not run yet)"
            )
            if fixed
            else ". glibc's default allocator (as users run it): a method measured after a larger one may reuse "
            "heap that one freed, so its peak increase is a lower bound (MALLOC_MMAP_THRESHOLD_=131072 measures "
            "each method's own)"
        )
        + (
            f"; QMC's compiled clip search was compiled or loaded from numba's cache once before the rows "
            f"({d['kernel_first_use_seconds']:.1f} s, in no row)"
            if "kernel_first_use_seconds" in d
            else ""
        )
        + ":",
        "",
        "| method | eff. bits | "
        + ("quantize s | " if timing else "")
        + ("quantize s, fixed threshold" if fixed else "quantize s")
        + " | peak RSS increase MB | peak RSS MB |",
        "|---|---:|---:|---:|---:|" + ("---:|" if timing else ""),
    ]
    later = sorted({c["separate_run"]["command"] for c in d["cost"] if c.get("separate_run")})
    for c in d["cost"]:
        t = timing.get(c["method"])
        mark = "†" if c.get("separate_run") else ""
        lines.append(
            f"| {c['method']}{mark} | {c['effective_bits']:.3f} | "
            + ((f"{t:.1f} | " if t is not None else "- | ") if timing else "")
            + f"{c['quantize_seconds']:.1f} | {c['peak_increase_MB']:.0f} | {c['peak_rss_MB']:.0f} |"
        )
    if later:
        lines += ["", "† measured later in a process of its own, same settings: " + "; ".join(f"`{c}`" for c in later)]
    secs = {c["spec"]: timing.get(c["method"], c["quantize_seconds"]) for c in d["cost"]}
    pairs = [
        ("qmc3", "rtn3", 3.0),
        ("qmc3:clip_search=descent", "rtn3", 3.0),
        ("qmc3-gptq", "gptq3", 1.0),
        ("qmc3-gptq:clip_search=descent", "gptq3", 1.0),
    ]
    ratios = [
        f"{a} / {b} = {secs[a] / secs[b]:.2f}x (target <= {t:g}x)" for a, b, t in pairs if a in secs and b in secs
    ]
    if ratios:
        lines += ["", "Ratios of wall times in this table: " + "; ".join(ratios) + "."]
    tmp = OUT_MD.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(OUT_MD)


if __name__ == "__main__":
    main()
