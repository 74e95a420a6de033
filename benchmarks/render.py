"""Regenerate BENCHMARKS.md (no measurement here): the perplexity, task and library-baseline tables from
the results store benchmarks/store (each a sweep spec in benchmarks/sweeps/, run with `qmc sweep`), the
other sections from the JSON and Markdown files the other benchmark scripts write."""

from __future__ import annotations

import json
import re
from pathlib import Path

from qmc_edge.sweep.spec import load_sweep_spec, method_texts
from qmc_edge.sweep.tables import payloads

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STORE = HERE / "store"
SWEEPS = HERE / "sweeps"


def from_store(name: str) -> dict | None:
    """The sweep ``name``'s results (benchmarks/sweeps/NAME.yaml) as one payload, rows in the spec's
    order; configurations of the spec not in the store are listed under ``missing``."""
    spec_file = SWEEPS / f"{name}.yaml"
    found = payloads(STORE, name) if (STORE / "points").is_dir() else []
    if not found:
        return None
    if len(found) > 1:
        raise SystemExit(f"sweep {name}: rows from {len(found)} models in {STORE}; the benchmark is one model")
    d = found[0]
    spec = load_sweep_spec(spec_file)
    order = method_texts(spec)
    by_text = {r["method_text"]: r for r in d["rows"]}
    d["rows"] = [by_text[t] for t in order if t in by_text]
    if spec.eval.tasks:  # the spec's task order (the store keeps them by name)
        for r in d["rows"]:
            r["tasks"] = {k: r["tasks"][k] for k in spec.eval.tasks.names if k in r.get("tasks", {})}
    d["missing"] = [t for t in order if t not in by_text]
    d["spec_file"] = f"benchmarks/sweeps/{name}.yaml"
    d["seeds"] = list(spec.eval.seed_list)
    d["limit"] = spec.eval.tasks.limit if spec.eval.tasks else None
    d["complete"] = not d["missing"]
    return d


def _provenance(d: dict) -> list[str]:
    """Spec, how to rerun it, and every command, machine and date the rows come from."""
    lines = [
        f"- spec: `{d['spec_file']}`; run `qmc sweep {d['spec_file']} --store benchmarks/store`, then "
        "`python benchmarks/render.py`"
        + ("" if d["complete"] else f" (**not yet measured**: {', '.join(d['missing'])})"),
    ]
    by_origin: dict[str, list[dict]] = {}
    for r in d["rows"]:
        by_origin.setdefault(r["origin"], []).append(r)
    for origin, rows in by_origin.items():
        machines = sorted({r["machine"] for r in rows})
        dates = sorted(r["date"] for r in rows)
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} .. {dates[-1]}"
        lines.append(f"- {len(rows)} row(s) {origin}; {when}; machine: {'; '.join(machines)}")
    lines.append(f"- compute: {d['wall_seconds'] / 60:.1f} min (quantization and evaluation of the rows shown)")
    return lines


def _ppl_section(d: dict) -> str:
    cap = (
        f"first {d['windows']} of {d['windows_available']} windows"
        if d["windows"] < d["windows_available"]
        else f"all {d['windows']} windows"
    )
    lines = [
        "## WikiText-2 perplexity, embedded model",
        "",
        *_provenance(d),
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
    items = {k: t["n"] for k, t in d["rows"][0]["tasks"].items()}
    names = list(items)
    sizes = ", ".join(f"{k} {v}" for k, v in items.items())
    lines = [
        title,
        "",
        *_provenance(d),
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


def _group_size_section(d: dict) -> str:
    """The default group size's screen (benchmarks/group_size.py): per group, perplexity with the clip
    search and with plain min-max, QMC 3-bit inliers, 1% outliers, ideal memory."""
    by = {r["method_text"]: r for r in d["rows"]}
    fp = by["fp"]["ppl"]
    lines = [
        "## Choice of the default group size (QMC, 3-bit inliers)",
        "",
        f"- command: `{d['command'].strip()}`; date: {d['date']}; machine: {d['machine']}",
        f"- {d['model']}, WikiText-2 test, first {d['windows']} windows of {d['context']} tokens, ideal memory "
        f"(no device noise), rho = 1%; FP {fp:.2f}, RTN-INT3 {by['rtn3']['ppl']:.2f}, QMC without outliers "
        f"(rho = 0, clip search only) {by['qmc:bits=3,rho=0,ideal_memory=true']['ppl']:.2f}",
        "",
        "| group | eff. bits | PPL, clip search (20 ratios) | PPL, min-max (no search) |",
        "|---|---:|---:|---:|",
    ]
    for g in (0, 64, 128, 256):
        search = by[f"qmc:bits=3,group_size={g},n_clip=20,ideal_memory=true"]
        minmax = by[f"qmc:bits=3,group_size={g},n_clip=1,ideal_memory=true"]
        label = "per channel" if g == 0 else str(g)
        lines.append(f"| {label} | {search['effective_bits']:.3f} | {search['ppl']:.2f} | {minmax['ppl']:.2f} |")
    return "\n".join(lines) + "\n"


def _where(spec: dict) -> str:
    """Where a configuration's codes live: its ReRAM cell model and error rate, or ideal memory."""
    from qmc_edge.methods.registry import method_class

    if spec["method"] == "fp":
        return "-"
    s = method_class(spec["method"]).model_validate(spec)
    if not s.uses_reram or getattr(s, "ideal_memory", False):
        return "ideal memory"
    dev = s.cells().describe()
    return f"{dev['name']} ({dev['mean_cell_error_rate']:.1e} errors/cell)"


def _baselines_section(d: dict) -> str:
    fp = next((r["ppl_mean"] for r in d["rows"] if r["spec"]["method"] == "fp"), None)
    windows = f"{d['windows']} of {d['windows_available']} windows of {d['context']} tokens"
    lines = [
        "### WikiText-2 perplexity: library baselines, QMC and QMC+GPTQ",
        "",
        *_provenance(d),
        f"- model: {d['note']}",
        f"- text: {d['text']}, {windows}, the same windows for every row; noisy rows: mean ± sample std over "
        f"seeds {d['seeds']}; Δ against FP; quantization times: the cost table above",
        "",
        "| method | where the codes live | eff. bits | PPL | Δ PPL |",
        "|---|---|---:|---:|---:|",
    ]

    def order(ir: tuple[int, dict]) -> tuple:
        """FP first, then by code bits; within a bit width ideal memory before noisy ReRAM; then spec order."""
        i, r = ir
        return (r["spec"]["method"] != "fp", r["spec"].get("bits", 16), bool(r["noisy"]), i)

    for _, r in sorted(enumerate(d["rows"]), key=order):
        ppl = f"{r['ppl_mean']:.3f}" + (f" ± {r['ppl_std']:.3f}" if r["noisy"] else "")
        delta = f"{r['ppl_mean'] - fp:+.3f}" if fp is not None else ""
        lines.append(f"| {r['method']} | {_where(r['spec'])} | {r['effective_bits']:.3f} | {ppl} | {delta} |")
    return "\n".join(lines) + "\n"


# Sections that other benchmark scripts write as markdown, in the order they appear.
_SECTIONS = [
    "frontier.md",
    "clip_search.md",
    "noise_cost.md",
    "inlier_refine.md",
    "cost.md",
    "contention.md",
    "large_model.md",
    "deploy.md",
    "claims.md",
    "artifact.md",
    "device_fidelity.md",
    "outlier_code.md",
    "reliability.md",
    "sweep_speed.md",
]


# The frontier's task sweeps, rendered after its perplexity section: (sweep, heading).
_FRONTIER_TASKS = (
    ("frontier-tasks", "### Zero-shot reasoning at the frontier's usable points"),
    ("frontier-gemma-tasks", "### Zero-shot reasoning at the frontier's usable points: Gemma-3-270M"),
)


_ABSOLUTE = re.compile(r"(?<![\w.])(?:/[\w.+-]+)+/([\w.+-]+\.(?:gguf|safetensors|json|yaml|txt))\b")


def portable(text: str) -> str:
    """Absolute paths of model and data files (a folder on one machine only) shortened to their file
    names: a recorded command must not name a path that exists on one machine."""
    return _ABSOLUTE.sub(lambda m: m.group(1), text)


def render() -> Path:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/render.py` from the results store `benchmarks/store` (perplexity, "
        "tasks and library baselines: the sweep specs in `benchmarks/sweeps/`) and `benchmarks/results/*.json`; "
        "each section names the command that measured it. Do not edit by hand.",
        "",
    ]
    ppl = from_store("ppl")
    if ppl:
        parts.append(_ppl_section(ppl))
    tasks = from_store("tasks")
    if tasks:
        parts.append(_tasks_section(tasks))
    speed = HERE / "results" / "tasks_speed_cpu.json"
    if speed.is_file():
        parts.append(_speed_section(json.loads(speed.read_text())))
    for name in _SECTIONS:
        if (HERE / name).is_file():
            parts.append((HERE / name).read_text())
        if name == "frontier.md":
            for sweep, title in _FRONTIER_TASKS:
                if d := from_store(sweep):
                    parts.append(_tasks_section(d, title))
        if name == "cost.md":
            for sweep, section in (("baselines", _baselines_section), ("tasks-baselines", _tasks_section)):
                d = from_store(sweep)
                if d and sweep == "tasks-baselines":
                    parts.append(section(d, "### Zero-shot reasoning: library baselines and QMC+GPTQ"))
                elif d:
                    parts.append(section(d))
    gs = HERE / "results" / "group_size.json"
    if gs.is_file():
        parts.append(_group_size_section(json.loads(gs.read_text())))
    parts.append(
        "Commentary on these results (hand-written, not generated: its figures quote the sections above "
        "and may lag them) is in `benchmarks/notes.md`.\n"
    )
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(portable("\n".join(parts)))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(render())
