"""What `qmc compare`, `ppl`, `tasks` and `demo` share around the engine
(:mod:`qmc_edge.model.runner`): reading the text and tasks before any model loads, progress bars, the
table and the JSON file. Shared by the main CLI and the tasks CLI (imports neither)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from qmc_edge.cli.common import console, out, progress_bars, run_env, tagged
from qmc_edge.jsonio import write_json
from qmc_edge.loaded import LoadedModel, bos_for
from qmc_edge.model.perplexity import TextSource, check_context, load_text, tokenize
from qmc_edge.model.runner import EvalSettings, run_method


def warn_gptq_fallback(method: str, info: dict) -> None:
    """Say in the output, not only in the JSON, which layers GPTQ could not round (it rounded them to
    nearest: their Hessian was not positive definite)."""
    fell = info.get("nearest_rounding_fallback") or []
    if fell:
        names = ", ".join(fell[:3]) + (f" and {len(fell) - 3} more" if len(fell) > 3 else "")
        console.print(
            tagged(
                "warning:",
                "yellow",
                f"{method}: {len(fell)} layer(s) rounded to nearest, not by GPTQ (Hessian not positive definite; "
                f"more calibration text helps): {names}",
            )
        )


def read_text(text: Path | None) -> TextSource:
    """The evaluation text, read (and so checked) before any model is loaded."""
    src = load_text(str(text) if text else None)
    if src.label.startswith("FALLBACK"):
        console.print(tagged("warning:", "yellow", src.label))
    return src


def load_task_items(names: list[str] | None, limit: int | None, data_dir: Path | None) -> dict:
    from qmc_edge.tasks.evaluate import load_tasks

    if not names:
        return {}
    with console.status("loading tasks ..."):
        return load_tasks(names, limit, data_dir)


def fmt_task(t: dict) -> str:
    """acc ± stderr (and acc_norm) of one task; with several seeds the seed spread follows in []."""
    parts = []
    for key in ("acc", "acc_norm"):
        if key in t:
            s = f"{100 * t[key]:.1f}±{100 * t[f'{key}_stderr']:.1f}"
            if len(t["seeds"]) > 1:
                s += f" [{100 * t[f'{key}_seed_std']:.1f}]"
            parts.append(s)
    return " / ".join(parts)


def compare_table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    has_ppl = "ppl_mean" in rows[0]
    task_names = list(rows[0].get("tasks", {}))
    cols = [("method", "left"), ("bits", "right"), ("eff. bits", "right")]
    cols += [("compr. layers", "right"), ("compr. model", "right")]
    if has_ppl:
        cols.append(("PPL", "right"))
    cols += [(f"{n} acc" + (" / acc_norm" if "acc_norm" in rows[0]["tasks"][n] else ""), "right") for n in task_names]
    cols += [("seeds", "right"), ("quant s", "right")]
    if has_ppl:
        cols.append(("tok/s", "right"))
    if task_names:
        cols.append(("items/s", "right"))
    for col, just in cols:
        t.add_column(col, justify=just)
    for r in rows:
        cells = [r["method"], str(r["bits"]), f"{r['effective_bits']:.3f}"]
        cells += [f"{r['compression_quantized_layers']:.2f}x", f"{r['compression_whole_model']:.2f}x"]
        if has_ppl:
            cells.append(f"{r['ppl_mean']:.3f}" + (f" ± {r['ppl_std']:.3f}" if r["noisy"] else ""))
        cells += [fmt_task(r["tasks"][n]) for n in task_names]
        cells += [str(len(r["seeds"])) if r["noisy"] else "-", f"{r['quantize_seconds']:.1f}"]
        if has_ppl:
            cells.append(f"{r['tokens_per_s']:.0f}")
        if task_names:
            cells.append(f"{statistics.fmean(x['items_per_s'] for x in r['tasks'].values()):.1f}")
        t.add_row(*cells)
    return t


def run_compare(
    lm: LoadedModel,
    specs: list,
    src: TextSource | None,
    context: int,
    max_windows: int | None,
    seeds: tuple[int, ...],
    json_path: Path | None,
    title: str,
    tasks: dict | None = None,
    task_limit: int | None = None,
    after: Callable[[list[dict]], dict] | None = None,
    rng: str = "torch",
) -> list[dict]:
    """Every spec on ``lm``: perplexity on ``src`` (None: tasks only) and ``tasks``, one row per spec."""
    with_ppl = src is not None
    if with_ppl:
        check_context(context, lm.max_context)
        with console.status("tokenizing ..."):
            ids = tokenize(lm.tokenizer, src.text)
        cfg = EvalSettings(context, max_windows, seeds, bos_for(lm.tokenizer), rng)
    else:
        ids, cfg = None, EvalSettings(context, max_windows, seeds, None, rng)
    rows = []
    with progress_bars() as prog:
        for spec in specs:
            rows.append(run_method(lm, spec, ids, cfg, prog, tasks=tasks))
    if with_ppl:
        ev = rows[0]["eval"]
        cap = (
            f"capped at {ev['windows']} of {ev['windows_available']} windows"
            if ev["capped"]
            else f"all {ev['windows']} windows"
        )
        heading = f"{title}: {src.label}, context {context}, {cap}"
    else:
        heading = title
    if tasks:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in tasks.items())
        heading += (
            "; tasks" if with_ppl else ""
        ) + f" ({'first ' + str(task_limit) if task_limit else 'all'} items): {sizes}"
        heading += "; acc/acc_norm in % ± stderr over items [spread over seeds]"
    out.print(compare_table(rows, heading))
    for r in rows:
        warn_gptq_fallback(r["method"], r.get("quantize_info") or {})
    if lm.note:
        out.print(f"note: {lm.note}")
    extra = after(rows) if after else {}
    if json_path:
        payload: dict = {"model": lm.source, "note": lm.note, "seeds": list(cfg.seeds), **extra}
        if with_ppl:
            ev = rows[0]["eval"]
            payload.update(
                text=src.label,
                text_path=src.path,
                context=context,
                max_windows=max_windows,
                capped=ev["capped"],
                windows=ev["windows"],
                windows_available=ev["windows_available"],
            )
        if tasks:
            payload["tasks"] = {k: {"items": len(v), "limit": task_limit} for k, v in tasks.items()}
        payload.update(rows=rows, env=run_env())
        write_json(json_path, payload)
        out.print(f"wrote {json_path}")
    return rows
