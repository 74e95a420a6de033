"""GPTQ, AWQ (llm-compressor) and HQQ (hqq) against RTN, QMC and QMC+GPTQ on the embedded model: quantization
cost side by side, then WikiText-2 perplexity in ideal memory and with the codes in noisy ReRAM.
Writes benchmarks/results/external.json and benchmarks/external.md.

    python benchmarks/external.py                  # 20 windows of 2048, 3 seeds, 64 x 512 calibration tokens
    python benchmarks/external.py --windows 40     # more windows (about 4 s per window, row and seed here)
    python benchmarks/external.py --render-only    # rewrite external.md from the JSON
    python benchmarks/external.py --append --rows qmc3-gptq          # add perplexity rows to the JSON
    python benchmarks/external.py --cost-append --cost-rows qmc3-gptq  # add cost rows (same allocator setting)

Needs the extras: pip install 'qmc-edge[gptq,hqq]'. Every row is evaluated on the same windows and
the noisy rows on the same seeds as QMC.

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
import re
import sys
import time
from pathlib import Path

import torch

from qmc_edge.experiment import EvalSettings, run_method
from qmc_edge.jsonio import write_json
from qmc_edge.methods import parse_method
from qmc_edge.model_io import load_model
from qmc_edge.perplexity import bos_for, load_text, tokenize
from qmc_edge.quantize_model import quantize_model, storage_report

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "results" / "external.json"
OUT_MD = HERE / "external.md"
COST_ROWS = ["rtn4", "rtn3", "qmc3", "qmc3-gptq", "gptq4", "gptq3", "awq4", "awq3", "hqq4", "hqq3"]
PPL_ROWS = [
    "fp",
    "rtn3",
    "gptq3",
    "awq3",
    "hqq3",
    "qmc3",
    "qmc3-gptq",
    "emem3",
    "emem-gptq3",
    "emem-awq3",
    "emem-hqq3",
    "rtn4",
    "gptq4",
    "awq4",
    "hqq4",
]


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


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
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
    wall = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
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
    from qmc_edge.external.calibration import calibration_text, ngram_overlap

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
    ap.add_argument("--windows", type=int, default=20, help="windows of --context (0 = all)")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--calib-len", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rows", nargs="*", default=PPL_ROWS, help="method specs for the perplexity table")
    ap.add_argument("--cost-rows", nargs="*", default=COST_ROWS, help="method specs for the cost table")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument(
        "--append",
        action="store_true",
        help="evaluate --rows and add them to the existing JSON (same windows; cost table kept)",
    )
    ap.add_argument(
        "--cost-append",
        action="store_true",
        help="measure --cost-rows in a new process and add them to the existing cost table (marked as such)",
    )
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
    if args.append:
        append_rows(args)
        return
    if args.cost_append:
        cost_append(args)
        return
    torch.set_num_threads(args.threads)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    calib = {"calib_samples": args.calib_samples, "calib_len": args.calib_len}
    lm = load_model(None)
    src = load_text()
    ids = tokenize(lm.tokenizer, src.text)
    cfg = EvalSettings(args.context, args.windows or None, tuple(range(args.seeds)), bos_for(lm.tokenizer))

    t0 = time.time()
    payload = {
        "benchmark": "external_baselines",
        "complete": False,
        "command": "python benchmarks/external.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} CPU",
        "threads": args.threads,
        "load_average_start": os.getloadavg(),
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "model": lm.source,
        "note": lm.note,
        "text": src.label,
        "context": args.context,
        "seeds": list(cfg.seeds),
        "calibration_overlap_13gram": calibration_overlap(src.text),
        "cost": [],
        "rows": [],
    }

    def save(done: bool = False) -> None:
        payload["wall_seconds"] = time.time() - t0
        payload["load_average_end"] = os.getloadavg()
        payload["complete"] = done
        write_json(OUT_JSON, payload)  # after every row: a run cut short keeps what it measured

    # The first quantization in a process pays one-off costs (page faults of fresh allocations, thread
    # pools): measured 132 s for RTN-INT4 first vs about 25 s after. An untimed warm-up run keeps that
    # off whichever method comes first.
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
    for spec_text in args.rows:
        r = ppl_row(lm, spec_text, calib, ids, cfg, t0)
        payload["rows"].append(r)
        payload["windows"] = r["eval"]["windows"]
        payload["windows_available"] = r["eval"]["windows_available"]
        save()
    save(done=True)
    render()


def ppl_row(lm, spec_text: str, calib: dict, ids, cfg: EvalSettings, t0: float) -> dict:
    """One perplexity row (quantize, then every seed), printed as it lands."""
    r = run_method(lm, _spec(spec_text, calib), ids, cfg)
    r["spec_text"] = spec_text
    print(
        f"{r['method']:34s} eff {r['effective_bits']:.3f}  PPL {r['ppl_mean']:.3f} ± {r['ppl_std']:.3f}"
        f"  [{time.time() - t0:.0f}s]",
        flush=True,
    )
    return r


def append_rows(args) -> None:
    """Perplexity rows added to an existing run (a run cut short, or rows asked for later): the same
    text, windows and calibration size as the rows already there; each row records its seeds."""
    d = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    torch.set_num_threads(args.threads)
    calib = {"calib_samples": args.calib_samples, "calib_len": args.calib_len}
    lm = load_model(None)
    src = load_text()
    ids = tokenize(lm.tokenizer, src.text)
    windows = d.get("windows") or args.windows or None
    cfg = EvalSettings(d["context"], windows, tuple(range(args.seeds)), bos_for(lm.tokenizer))
    t0 = time.time()
    d.setdefault("appended", []).append(
        {
            "command": "python benchmarks/external.py " + " ".join(sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "rows": list(args.rows),
        }
    )
    for spec_text in args.rows:
        d["rows"].append(ppl_row(lm, spec_text, calib, ids, cfg, t0))
        write_json(OUT_JSON, d)
    render()


def cost_append(args) -> None:
    """Cost rows for methods added after the first run, measured as main() measures them (after an
    untimed warm-up, same calibration size) but in a process of their own; the row says so."""
    d = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != d.get("malloc_mmap_threshold"):
        raise SystemExit(
            f"the cost table was measured with MALLOC_MMAP_THRESHOLD_={d.get('malloc_mmap_threshold')}; set the same"
        )
    torch.set_num_threads(args.threads)
    calib = {"calib_samples": args.calib_samples, "calib_len": args.calib_len}
    lm = load_model(None)
    measure_quantize(lm, "rtn4", calib)  # warm-up, as in main()
    run = {
        "command": "python benchmarks/external.py " + " ".join(sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }
    for spec_text in args.cost_rows:
        row = measure_quantize(lm, spec_text, calib)
        row["separate_run"] = run
        d["cost"] = [c for c in d["cost"] if c["method"] != row["method"]] + [row]
        print(f"{row['method']:34s} quantize {row['quantize_seconds']:7.1f} s  peak +{row['peak_increase_MB']:7.0f} MB")
        write_json(OUT_JSON, d)
    render()


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
    """benchmarks/external.md from the JSON: what was run, the cost table, the perplexity table."""
    d = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    cost = {c["method"]: c for c in d["cost"]}
    fp = next((r["ppl_mean"] for r in d["rows"] if r["spec"]["method"] == "fp"), None)
    calib = next((c["info"]["calibration"] for c in d["cost"] if c["info"].get("calibration")), None)
    lib = next((c["info"]["library"] for c in d["cost"] if c["info"].get("library")), None)
    lines = [
        "## Library baselines: GPTQ, AWQ (llm-compressor) and HQQ (hqq)",
        "",
        f"Generated by `{d['command']}` on {d['date']} ({d['machine']}; load average "
        f"{d['load_average_start'][0]:.1f} at the start, {d['load_average_end'][0]:.1f} at the end: the machine was "
        "shared, so times are upper bounds)."
        + (" The first run was cut short; rows were added:" if not d["complete"] else ""),
        f"Model: {d['model']} ({d['note']}). Text: {d['text']}, {d.get('windows', '?')} of "
        f"{d.get('windows_available', '?')} windows of {d['context']} tokens, the same windows for every row; "
        f"noisy rows over the seeds in their row ({d['seeds']} in the first run).",
    ]
    for a in d.get("appended", []):
        mm = f", glibc mmap threshold {a['malloc_mmap_threshold']}" if a.get("malloc_mmap_threshold") else ""
        lines.insert(-1, f"- `{a['command']}` ({a['date']}{mm}): {', '.join(a['rows'])}")
    if d.get("appended"):
        lines.insert(-1, "")
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
    lines += [
        "",
        "WikiText-2 perplexity (mean ± sample std over seeds where reads are noisy; Δ against FP):",
        "",
        "| method | where the codes live | eff. bits | PPL | Δ PPL | quantize s |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def order(ir: tuple[int, dict]) -> tuple:
        """FP first, then by code bits; within a bit width ideal memory before noisy ReRAM; then run order."""
        i, r = ir
        return (r["spec"]["method"] != "fp", r["spec"]["bits"], bool(r["noisy"]), i)

    for _, r in sorted(enumerate(d["rows"]), key=order):
        dev = r["device"]
        if isinstance(dev, dict):
            dev = f"{dev['name']} ({dev['mean_cell_error_rate']:.1e} errors/cell)"
        where = dev or ("-" if r["spec"]["method"] == "fp" else "ideal memory")
        ppl = f"{r['ppl_mean']:.3f}" + (f" ± {r['ppl_std']:.3f}" if r["noisy"] else "")
        delta = f"{r['ppl_mean'] - fp:+.3f}" if fp is not None else ""
        qs = timing.get(r["method"], cost.get(r["method"], {}).get("quantize_seconds", r["quantize_seconds"]))
        lines.append(f"| {r['method']} | {where} | {r['effective_bits']:.3f} | {ppl} | {delta} | {qs:.1f} |")
    tmp = OUT_MD.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(OUT_MD)


if __name__ == "__main__":
    main()
