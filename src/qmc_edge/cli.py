"""`qmc`: quantize, measure perplexity, compare methods, run the demo."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .errors import QMCError
from .experiment import EvalSettings, run_method
from .jsonio import check_writable, write_json
from .methods import PRESETS, MethodSpec, parse_method
from .model_io import LoadedModel, load_model
from .perplexity import bos_for, check_context, load_text, tokenize
from .quantize_model import quantize_model, storage_report

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)
out = Console()

DEFAULT_COMPARE = ["fp", "rtn4", "rtn3", "mxint4", "emem3", "qmc3", "qmc2"]

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="GGUF file, HF model folder or hub id; default: embedded SmolLM2-135M")
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write results as JSON to this path")]
TextOpt = Annotated[Path | None, typer.Option("--text", help="text file; default WikiText-2 raw test")]
CtxOpt = Annotated[int, typer.Option("--context", help="tokens per window")]
WinOpt = Annotated[int | None, typer.Option("--max-windows", help="cap on windows (quick runs)")]
SeedsOpt = Annotated[int, typer.Option("--seeds", help="noise seeds 0..N-1 for noisy methods")]
SeedOpt = Annotated[int, typer.Option("--seed", help="first noise seed")]
TaskOpt = Annotated[
    list[str] | None,
    typer.Option("--task", "-t", help="arc_easy, arc_challenge, boolq, hellaswag, or a JSON-lines file; repeat"),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="first N items of each task")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder with arc/, boolq/, hellaswag/")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="where the model runs: cpu, cuda, cuda:N (quantization stays on the CPU)")
]


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def _errors():
    try:
        yield
    except QMCError as exc:
        _fail(str(exc))
    except ValueError as exc:  # bad method specs and option values
        _fail(str(exc).splitlines()[0])


@contextmanager
def _progress():
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        tasks: dict[str, int] = {}

        def update(desc: str, done: int, total: int) -> None:
            if desc not in tasks:
                tasks[desc] = prog.add_task(desc, total=total)
            prog.update(tasks[desc], completed=done, total=total)

        yield update


def _load(model: str | None, device: str = "cpu") -> LoadedModel:
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with console.status(f"loading {model or 'embedded SmolLM2-135M-Instruct'} ..."):
        lm = load_model(model, device=device)
    if lm.note:
        console.print(f"[yellow]note:[/] {lm.note}", highlight=False)
    return lm


def _env() -> dict:
    import transformers

    return {
        "qmc_edge": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


def _storage_table(name: str, rep: dict) -> Table:
    t = Table(title=f"storage: {name}", show_header=True)
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("quantized params", f"{rep['quantized_params']:,}")
    t.add_row("unquantized params (FP16)", f"{rep['unquantized_params']:,}")
    t.add_row("effective bits / quantized weight", f"{rep['effective_bits']:.3f}")
    for comp, bits in rep["bits_by_component"].items():
        t.add_row(f"  {comp}", f"{bits / rep['quantized_params']:.3f} b/w")
    for mem, bits in rep["bits_by_memory"].items():
        t.add_row(f"memory {mem}", f"{bits / 8e6:.3f} MB")
    if rep["reram_cells"]:
        t.add_row("ReRAM cells", f"{rep['reram_cells']:,} @ {rep['reram_bits_per_cell']} b/cell")
    if rep["outliers"]:
        t.add_row("outliers (MRAM)", f"{rep['outliers']:,}")
    t.add_row("compression vs FP16, quantized layers", f"{rep['compression_quantized_layers']:.2f}x")
    t.add_row("compression vs FP16, whole model", f"{rep['compression_whole_model']:.2f}x")
    return t


def _spec(method: str, bits, group_size, rho, cell_bits, embeddings) -> MethodSpec:
    over = {"bits": bits, "group_size": group_size, "rho": rho, "cell_bits": cell_bits}
    if embeddings:
        over["quantize_embeddings"] = True
    return parse_method(method, **over)


@app.command()
def quantize(
    method: Annotated[str, typer.Option("--method", "-m", help=f"method or preset ({', '.join(PRESETS)})")] = "qmc3",
    model: ModelOpt = None,
    bits: Annotated[int | None, typer.Option(help="inlier bits (2, 3, 4)")] = None,
    group_size: Annotated[int | None, typer.Option(help="group size, 0 = per channel")] = None,
    rho: Annotated[float | None, typer.Option(help="outlier share per tensor (qmc)")] = None,
    cell_bits: Annotated[int | None, typer.Option(help="bits per ReRAM cell")] = None,
    embeddings: Annotated[bool, typer.Option("--quantize-embeddings", help="quantize embeddings/head too")] = False,
    json_path: JsonOpt = None,
) -> None:
    """Quantize a model with one method and print its storage report."""
    with _errors():
        spec = _spec(method, bits, group_size, rho, cell_bits, embeddings)
        if json_path:
            check_writable(json_path)
        lm = _load(model)
        with _progress() as prog:
            qm = quantize_model(
                lm.model, spec, lambda i, n: prog(f"quantize {spec.name}", i, n), tokenizer=lm.tokenizer
            )
        rep = storage_report(lm.model, spec, qm)
        out.print(_storage_table(spec.name, rep))
        secs = qm.quantize_seconds if qm else 0.0
        out.print(f"quantized {len(qm.tensors) if qm else 0} tensors in {secs:.1f} s")
        if spec.uses_reram:
            out.print(f"device: {spec.device().describe()}")
        if json_path:
            payload = {
                "model": lm.source,
                "note": lm.note,
                "method": spec.name,
                "spec": spec.model_dump(),
                "quantize_seconds": secs,
                "info": qm.info if qm else {},
                "storage": rep,
                "env": _env(),
            }
            write_json(json_path, payload)
            out.print(f"wrote {json_path}")


def _prepare_eval(lm: LoadedModel, text: Path | None, context: int, max_windows: int | None, seeds: int, seed: int):
    check_context(context, lm.max_context)
    if seeds < 1:
        raise QMCError(f"--seeds must be at least 1, got {seeds}")
    if max_windows is not None and max_windows < 1:
        raise QMCError(f"--max-windows must be at least 1, got {max_windows}")
    src = load_text(str(text) if text else None)
    if src.label.startswith("FALLBACK"):
        console.print(f"[yellow]warning:[/] {src.label}")
    with console.status("tokenizing ..."):
        ids = tokenize(lm.tokenizer, src.text)
    cfg = EvalSettings(context, max_windows, tuple(range(seed, seed + seeds)), bos_for(lm.tokenizer))
    return src, ids, cfg


def _fmt_task(t: dict) -> str:
    """acc ± stderr (and acc_norm) of one task; with several seeds the seed spread follows in []."""
    parts = []
    for key in ("acc", "acc_norm"):
        if key in t:
            s = f"{100 * t[key]:.1f}±{100 * t[f'{key}_stderr']:.1f}"
            if len(t["seeds"]) > 1:
                s += f" [{100 * t[f'{key}_seed_std']:.1f}]"
            parts.append(s)
    return " / ".join(parts)


def _compare_table(rows: list[dict], title: str) -> Table:
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
        cells += [_fmt_task(r["tasks"][n]) for n in task_names]
        cells += [str(len(r["seeds"])) if r["noisy"] else "-", f"{r['quantize_seconds']:.1f}"]
        if has_ppl:
            cells.append(f"{r['tokens_per_s']:.0f}")
        if task_names:
            cells.append(f"{statistics.fmean(x['items_per_s'] for x in r['tasks'].values()):.1f}")
        t.add_row(*cells)
    return t


def _load_tasks(names: list[str] | None, limit: int | None, data_dir: Path | None) -> dict:
    from .tasks.evaluate import load_tasks

    if not names:
        return {}
    with console.status("loading tasks ..."):
        return load_tasks(names, limit, data_dir)


def _run_compare(
    lm,
    specs,
    text,
    context,
    max_windows,
    seeds,
    seed,
    json_path,
    title,
    tasks: dict | None = None,
    with_ppl: bool = True,
    task_limit: int | None = None,
    after: Callable[[list[dict]], dict] | None = None,
) -> list[dict]:
    if with_ppl:
        src, ids, cfg = _prepare_eval(lm, text, context, max_windows, seeds, seed)
    else:
        if seeds < 1:
            raise QMCError(f"--seeds must be at least 1, got {seeds}")
        src, ids, cfg = None, None, EvalSettings(context, max_windows, tuple(range(seed, seed + seeds)), None)
    rows = []
    with _progress() as prog:
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
    out.print(_compare_table(rows, heading))
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
        payload.update(rows=rows, env=_env())
        write_json(json_path, payload)
        out.print(f"wrote {json_path}")
    return rows


@app.command()
def ppl(
    method: Annotated[str, typer.Option("--method", "-m", help="method or preset; fp = no quantization")] = "fp",
    model: ModelOpt = None,
    bits: Annotated[int | None, typer.Option(help="inlier bits")] = None,
    group_size: Annotated[int | None, typer.Option(help="group size, 0 = per channel")] = None,
    rho: Annotated[float | None, typer.Option(help="outlier share (qmc)")] = None,
    cell_bits: Annotated[int | None, typer.Option(help="bits per ReRAM cell")] = None,
    embeddings: Annotated[bool, typer.Option("--quantize-embeddings")] = False,
    text: TextOpt = None,
    context: CtxOpt = 2048,
    max_windows: WinOpt = None,
    seeds: SeedsOpt = 3,
    seed: SeedOpt = 0,
    json_path: JsonOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """Perplexity of a model, optionally quantized and read through noisy devices, over N seeds."""
    with _errors():
        spec = _spec(method, bits, group_size, rho, cell_bits, embeddings)
        if json_path:
            check_writable(json_path)
        lm = _load(model, device)
        _run_compare(lm, [spec], text, context, max_windows, seeds, seed, json_path, "perplexity")


@app.command()
def compare(
    methods: Annotated[
        list[str] | None, typer.Option("--method", "-m", help="repeat per row (default: a standard set)")
    ] = None,
    model: ModelOpt = None,
    text: TextOpt = None,
    context: CtxOpt = 2048,
    max_windows: WinOpt = None,
    seeds: SeedsOpt = 3,
    seed: SeedOpt = 0,
    task: TaskOpt = None,
    task_limit: LimitOpt = None,
    data_dir: DataOpt = None,
    json_path: JsonOpt = None,
    device: DeviceOpt = "cpu",
) -> None:
    """A matrix of methods on one model: bits, effective bits, compression, PPL mean ± std, time
    (and reasoning-task accuracy columns with --task)."""
    with _errors():
        specs = [parse_method(m) for m in (methods or DEFAULT_COMPARE)]
        if json_path:
            check_writable(json_path)
        tasks = _load_tasks(task, task_limit, data_dir)
        lm = _load(model, device)
        _run_compare(
            lm, specs, text, context, max_windows, seeds, seed, json_path, "compare", tasks, task_limit=task_limit
        )


@app.command()
def demo(
    text: TextOpt = None,
    context: CtxOpt = 1024,
    max_windows: WinOpt = 4,
    seeds: SeedsOpt = 2,
    json_path: Annotated[Path | None, typer.Option("--json", help="JSON output")] = Path("results/demo.json"),
) -> None:
    """The main job on the embedded default: a short compare of FP, RTN, MXINT4, eMEM-naive and QMC."""
    with _errors():
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
        lm = _load(None)
        _run_compare(
            lm,
            [parse_method(m) for m in DEFAULT_COMPARE],
            text,
            context,
            max_windows,
            seeds,
            0,
            json_path,
            "demo (short run; see BENCHMARKS.md for the full numbers)",
            after=lambda rows: _demo_headline(lm, rows),
        )


def _demo_headline(lm: LoadedModel, rows: list[dict]) -> dict:
    """The deployment model's headline for the demo's methods: per decoded token, against FP16 on
    a Jetson AGX Orin-class platform (see `qmc deploy` for workloads, platforms and plots)."""
    from .deploy.arch import from_model
    from .deploy.cli import headline_table
    from .deploy.system import headline_rows

    reports = {r["method"]: r["storage"] for r in rows if r["spec"]["method"] != "fp"}
    arch = from_model(lm.model, "smollm2-135m")  # the demo always runs the embedded default
    head = headline_rows(arch, reports, platforms=("orin_agx", "qmc_hetero"))
    title = "deployment model, per decoded token: ratios vs FP16 on orin_agx, nominal (min-max over device figures)"
    out.print(headline_table(head, title))
    return {"deployment": head}


@app.command()
def methods() -> None:
    """List method presets and options."""
    t = Table(title="presets (use as -m NAME, or NAME:key=value,...)")
    t.add_column("preset")
    t.add_column("spec")
    t.add_column("label")
    for k, v in PRESETS.items():
        t.add_row(k, v, parse_method(k).name)
    out.print(t)
    o = Table(title="options")
    o.add_column("key")
    o.add_column("default")
    o.add_column("meaning")
    for name, f in MethodSpec.model_fields.items():
        if name != "method":
            o.add_row(name, str(f.default), f.description or "")
    out.print(o)


# Commands that live beside their feature (tasks, deployment model, artifacts) register themselves
# here, so each feature keeps its CLI next to its code. A module that is absent is simply skipped.
_EXTENSIONS = ("qmc_edge.tasks.cli", "qmc_edge.deploy.cli", "qmc_edge.artifact.cli")


def _register_extensions() -> None:
    import importlib

    for name in _EXTENSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue
            raise
        mod.register(app)


_register_extensions()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
