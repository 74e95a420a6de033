"""Packed QMC artifacts of the embedded model: size on disk per method against FP16 and against the
storage report, export and load time, bit-exactness of the round trip, and sample generations.

    python benchmarks/artifact.py               # about 5-10 min on a 2-core CPU
    python benchmarks/artifact.py --quick       # fp, rtn4, qmc3 only, one prompt

Writes benchmarks/results/artifact.json and benchmarks/artifact.md (stitched into BENCHMARKS.md).
Artifacts are written to a temporary folder and deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from qmc_edge.artifact.export import export_artifact
from qmc_edge.artifact.generate import GenerationSettings, generate_text
from qmc_edge.artifact.load import load_artifact
from qmc_edge.jsonio import write_json
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.model.loading import load_model

HERE = Path(__file__).resolve().parent
METHODS = ["fp", "rtn4", "mxint4", "emem3", "qmc3", "qmc2"]
PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
]
GEN = GenerationSettings(max_new_tokens=40)


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _fp32_scale_excess(manifest) -> int:
    """Bytes that fp32 scales take beyond the fp16 the storage report counts."""
    return sum(2 * e.shape[0] * e.n_groups for e in manifest.tensors if e.scale_encoding == "float32")


def _bit_exact(lm, qm, art, seed: int | None) -> bool:
    """Loaded weights == in-memory ones: noise-free, or the noise realisation for ``seed``."""
    if qm is None:
        return True
    params = dict(lm.model.named_parameters())
    loaded = dict(art.model.named_parameters())
    art.realise(seed)
    try:
        if seed is None:
            return all(torch.equal(loaded[n], qt.dequantize()) for n, qt in qm.tensors.items())
        qm.realise(lm.model, seed)
        return all(torch.equal(loaded[n], params[n]) for n in qm.tensors)
    finally:
        qm.restore(lm.model)
        art.realise(None)


def _generate(model, tok, prompts) -> list[dict]:
    out = []
    for p in prompts:
        r = generate_text(model, tok, p, GEN)
        out.append({"prompt": p, "text": r.text, "tokens_per_s": r.tokens_per_s})
        print(f"    {p!r} -> {r.text!r}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    methods = ["fp", "rtn4", "qmc3"] if args.quick else METHODS
    prompts = PROMPTS[:1] if args.quick else PROMPTS
    t0 = time.perf_counter()
    lm = load_model(None)
    print(f"loaded embedded model in {time.perf_counter() - t0:.1f} s", flush=True)
    fp16_bytes = storage_report(lm.model, parse_method("fp"), None)["model_MB"] * 1e6
    rows, generations = [], {}
    work = Path(tempfile.mkdtemp(prefix="qmc-artifact-bench-"))
    try:
        generations["FP (reference, fp32)"] = _generate(lm.model, lm.tokenizer, prompts)
        for m in methods:
            spec = parse_method(m)
            qm = quantize_model(lm.model, spec)
            rep = storage_report(lm.model, spec, qm)
            path = work / m
            res = export_artifact(lm, spec, qm, path)
            t1 = time.perf_counter()
            art = load_artifact(path)
            load_s = time.perf_counter() - t1
            exact = _bit_exact(lm, qm, art, None)
            exact_noise = _bit_exact(lm, qm, art, 0) if spec.noisy else None
            excess = _fp32_scale_excess(res.manifest)
            row = {
                "method": spec.name,
                "preset": m,
                "packed_MB": res.packed_bytes / 1e6,
                "folder_MB": _dir_bytes(path) / 1e6,
                "report_model_MB": rep["model_MB"],
                "packed_vs_report": res.packed_bytes / (rep["model_MB"] * 1e6),
                "packed_vs_fp16": res.packed_bytes / fp16_bytes,
                "scale_encodings": sorted({e.scale_encoding for e in res.manifest.tensors}),
                "fp32_scale_excess_MB": excess / 1e6,
                "packed_vs_report_if_fp16_scales": (res.packed_bytes - excess) / (rep["model_MB"] * 1e6),
                "dense_exact_fp16": res.manifest.dense_exact,
                "quantize_s": qm.quantize_seconds if qm else 0.0,
                "export_s": res.seconds,
                "load_s": load_s,
                "bit_exact": exact,
                "bit_exact_noise_seed0": exact_noise,
            }
            rows.append(row)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            if m in ("qmc3", "qmc2"):
                generations[f"{spec.name} artifact, noise-free read"] = _generate(art.model, art.tokenizer, prompts)
                if m == "qmc3" and spec.noisy:
                    art.realise(0)
                    generations[f"{spec.name} artifact, noise seed 0"] = _generate(art.model, art.tokenizer, prompts)
            del art
            shutil.rmtree(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import transformers

    payload = {
        "model": lm.source,
        "note": lm.note,
        "fp16_MB": fp16_bytes / 1e6,
        "rows": rows,
        "generation": {"settings": GEN.__dict__, "outputs": generations},
        "env": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "command": "python benchmarks/artifact.py" + (" --quick" if args.quick else ""),
        },
    }
    write_json(HERE / "results" / "artifact.json", payload)
    (HERE / "artifact.md").write_text(render(payload), encoding="utf-8")
    print(f"wrote {HERE / 'results' / 'artifact.json'} and {HERE / 'artifact.md'}")


def render(p: dict) -> str:
    env = p["env"]
    lines = [
        "## Packed artifacts (`qmc export`)",
        "",
        f"`{env['command']}` on {env['date'][:10]}, {env['machine']}, torch {env['torch']}, "
        f"transformers {env['transformers']}. Model: {p['note']}.",
        "",
        "packed = the tensor files (safetensors, headers included); folder adds config, tokenizer and",
        "manifest. Report = `storage_report` model_MB (unquantized tensors at FP16). Load includes",
        "sha256 of every file and building the torch model. Bit-exact: loaded dequantized weights are",
        "`torch.equal` to the in-memory quantization (and for noisy methods, noise seed 0 to",
        "`QuantizedModel.realise`).",
        "",
        "| method | packed MB | vs FP16 | report MB | packed / report | folder MB | export s | load s | bit-exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in p["rows"]:
        ex = "yes" if r["bit_exact"] else "NO"
        if r["bit_exact_noise_seed0"] is not None:
            ex += ", seed 0 " + ("yes" if r["bit_exact_noise_seed0"] else "NO")
        lines.append(
            f"| {r['method']} | {r['packed_MB']:.2f} | {r['packed_vs_fp16']:.3f} | {r['report_model_MB']:.2f} | "
            f"{r['packed_vs_report']:.4f} | {r['folder_MB']:.2f} | {r['export_s']:.1f} | {r['load_s']:.1f} | {ex} |"
        )
    scales = [r for r in p["rows"] if "float32" in r["scale_encodings"]]
    if scales:
        lines += [
            "",
            "Scales are stored exactly as the in-memory quantizer holds them; where that is fp32 (RTN/eMEM/QMC",
            "today) they take 2 bytes more per group than the fp16 the report counts: "
            + ", ".join(
                f"{r['preset']} +{r['fp32_scale_excess_MB']:.2f} MB (ratio {r['packed_vs_report_if_fp16_scales']:.4f}"
                " with fp16 scales)"
                for r in scales
            )
            + ".",
        ]
    lines += ["", f"Greedy generations, {p['generation']['settings']['max_new_tokens']} new tokens:", ""]
    for label, outs in p["generation"]["outputs"].items():
        lines.append(f"**{label}**")
        lines.append("")
        for o in outs:
            text = o["text"].replace("\n", " ").replace("|", "\\|").strip()
            lines.append(f"- *{o['prompt']}* → {text}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
