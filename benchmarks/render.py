"""Regenerate BENCHMARKS.md from the JSON files in benchmarks/results/ (no measurement here)."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _ppl_section(d: dict) -> str:
    cap = (
        f"first {d['windows']} of {d['windows_available']} windows"
        if d["windows"] < d["windows_available"]
        else f"all {d['windows']} windows"
    )
    lines = [
        "## WikiText-2 perplexity, embedded model",
        "",
        f"- command: `{d['command'].strip()}`" + ("" if d.get("complete", True) else " (**incomplete run**)"),
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min",
        f"- model: {d['note']}",
        f"- text: {d['text']}, context {d['context']}, {cap} (the same windows for every row)",
        f"- noisy rows: mean ± sample std over seeds {d['seeds']}; deterministic rows are evaluated once",
        "- effective bits: all stored bits of the quantized layers (codes or ReRAM cell capacity, scales, zero "
        "points, outlier values and CSR indices) per quantized weight; compression against FP16; the model "
        "column also counts the unquantized embeddings and norms at FP16",
        "",
        "| method | eff. bits | compression (layers) | compression (model) | PPL | PPL per seed | quantize s |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in d["rows"]:
        ppl = f"{r['ppl_mean']:.3f}" + (f" ± {r['ppl_std']:.3f}" if r["noisy"] else "")
        seeds = ", ".join(f"{p:.3f}" for p in r["ppl_per_seed"]) if r["noisy"] else "-"
        lines.append(
            f"| {r['method']} | {r['effective_bits']:.3f} | {r['compression_quantized_layers']:.2f}x | "
            f"{r['compression_whole_model']:.2f}x | {ppl} | {seeds} | {r['quantize_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _pct(t: dict, key: str) -> str:
    if key not in t:
        return "-"
    s = f"{100 * t[key]:.1f} ± {100 * t[key + '_stderr']:.1f}"
    if len(t["seeds"]) > 1:
        s += f" [{100 * t[key + '_seed_std']:.1f}]"
    return s


def _tasks_section(d: dict, title: str = "## Zero-shot reasoning, embedded model") -> str:
    names = list(d["items"])
    sizes = ", ".join(f"{k} {v}" for k, v in d["items"].items())
    lines = [
        title,
        "",
        f"- command: `{d['command'].strip()}`" + ("" if d.get("complete", True) else " (**incomplete run**)"),
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min",
        f"- model: {d['note']}",
        f"- items: {'first ' + str(d['limit']) + ' of each set' if d['limit'] else 'full sets'} ({sizes}); "
        "ARC test, BoolQ dev, HellaSwag validation from ../shared/data, prompts and metrics as "
        "lm-evaluation-harness (per-item parity checked in tests/test_lmeval_parity.py)",
        f"- cells: accuracy in % ± standard error over items; noisy rows average seeds {d['seeds']} and show "
        "the spread over seeds in [ ]; acc_norm = log-likelihood over the choice's length in characters",
        "",
        "| method | eff. bits | "
        + " | ".join(
            f"{n} acc" + (" | " + n + " acc_norm" if "acc_norm" in d["rows"][0]["tasks"][n] else "") for n in names
        )
        + " | items/s (machine above) |",
    ]
    ncols = 2 + sum(2 if "acc_norm" in d["rows"][0]["tasks"][n] else 1 for n in names) + 1
    lines.append("|---" + "|---:" * (ncols - 1) + "|")
    for r in d["rows"]:
        cells = [r["method"], f"{r['effective_bits']:.3f}"]
        for n in names:
            t = r["tasks"][n]
            cells.append(_pct(t, "acc"))
            if "acc_norm" in t:
                cells.append(_pct(t, "acc_norm"))
        ips = sum(t["items_per_s"] for t in r["tasks"].values()) / len(names)
        cells.append(f"{ips:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _speed_section(d: dict) -> str:
    """Scoring speed on the CPU machine the issue sets the goal on (the accuracy table above may
    come from a faster machine; its numbers do not depend on it)."""
    r = d["rows"][0]
    total = sum(t["n"] for t in r["tasks"].values())
    secs = sum(t["n"] / t["items_per_s"] for t in r["tasks"].values())
    lines = [
        "### Scoring speed on the 2-core CPU machine",
        "",
        f"- command: `{d['command'].strip()}`; date: {d['date']}; machine: {d['machine']}",
        f"- {r['method']}, first {d['limit']} items of each task: {total} items in {secs:.0f} s of scoring "
        f"({secs / 60:.1f} min, model loading excluded)",
        "",
        "| task | items | items/s | seconds |",
        "|---|---:|---:|---:|",
    ]
    for name, t in r["tasks"].items():
        lines.append(f"| {name} | {t['n']} | {t['items_per_s']:.2f} | {t['n'] / t['items_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


# Sections that other benchmark scripts write as markdown, in the order they appear.
_SECTIONS = [
    "external.md",
    "deploy.md",
    "claims.md",
    "artifact.md",
    "device_fidelity.md",
    "outlier_code.md",
    "reliability.md",
]


def render() -> Path:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/render.py` from `benchmarks/results/*.json`; each section names the "
        "command that measured it. Do not edit by hand.",
        "",
    ]
    ppl = HERE / "results" / "ppl.json"
    if ppl.is_file():
        parts.append(_ppl_section(json.loads(ppl.read_text())))
    tasks = HERE / "results" / "tasks.json"
    if tasks.is_file():
        parts.append(_tasks_section(json.loads(tasks.read_text())))
    speed = HERE / "results" / "tasks_speed_cpu.json"
    if speed.is_file():
        parts.append(_speed_section(json.loads(speed.read_text())))
    for name in _SECTIONS:
        if (HERE / name).is_file():
            parts.append((HERE / name).read_text())
        ext_tasks = HERE / "results" / "tasks_external.json"
        if name == "external.md" and ext_tasks.is_file():
            title = "### Zero-shot reasoning: library baselines and QMC+GPTQ"
            parts.append(_tasks_section(json.loads(ext_tasks.read_text()), title))
    notes = HERE / "notes.md"
    if notes.is_file():
        parts.append(notes.read_text())
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(render())
