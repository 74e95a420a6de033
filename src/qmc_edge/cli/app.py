"""`qmc`: quantize, measure perplexity, compare methods, run the demo.

Shared helpers and option declarations live in :mod:`qmc_edge.cli.common`, the evaluation run in
:mod:`qmc_edge.cli.eval_cmds`; the feature CLIs (tasks, deployment, artifacts) register their commands here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qmc_edge.cli.common import (
    BitsOpt,
    CellOpt,
    CtxOpt,
    DataOpt,
    DeviceOpt,
    EmbOpt,
    GroupOpt,
    JsonOpt,
    LimitOpt,
    MethodOpt,
    MethodsOpt,
    ModelOpt,
    NoiseSeedOpt,
    RhoOpt,
    RngOpt,
    SeedsOpt,
    TaskOpt,
    TextOpt,
    WinOpt,
    check_eval,
    check_limit,
    check_output_file,
    check_rng,
    check_seeds,
    errors,
    load,
    out,
    progress_bars,
    run_env,
    spec_from_flags,
    unique_names,
)
from qmc_edge.cli.eval_cmds import load_task_items, read_text, run_compare, warn_gptq_fallback
from qmc_edge.jsonio import write_json
from qmc_edge.loaded import LoadedModel
from qmc_edge.methods import PRESETS, options, parse_method, registered
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.torch_device import check_device

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])

DEFAULT_COMPARE = ["fp", "rtn4", "rtn3", "mxint4", "emem3", "qmc3", "qmc2"]


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
        t.add_row("ReRAM cells", f"{rep['reram_cells']:,} @ {rep['reram_bits_per_cell']:g} b/cell")
    if rep["outliers"]:
        t.add_row("outliers (MRAM)", f"{rep['outliers']:,}")
    if rep.get("reram_cells_under_outliers"):
        share = rep["reram_cells_under_outliers"] / rep["reram_cells"]
        t.add_row("  ReRAM cells under outlier slots", f"{rep['reram_cells_under_outliers']:,} ({100 * share:.2f}%)")
    t.add_row("compression vs FP16, quantized layers", f"{rep['compression_quantized_layers']:.2f}x")
    t.add_row("compression vs FP16, whole model", f"{rep['compression_whole_model']:.2f}x")
    return t


@app.command()
def quantize(
    method: MethodOpt = "qmc3",
    model: ModelOpt = None,
    bits: BitsOpt = None,
    group_size: GroupOpt = None,
    rho: RhoOpt = None,
    cell_bits: CellOpt = None,
    embeddings: EmbOpt = False,
    json_path: JsonOpt = None,
) -> None:
    """Quantize a model with one method and print its storage report."""
    with errors():
        spec = spec_from_flags(method, bits, group_size, rho, cell_bits, embeddings)
        check_output_file(json_path)
        lm = load(model)
        with progress_bars() as prog:
            qm = quantize_model(
                lm.model, spec, lambda i, n: prog(f"quantize {spec.name}", i, n), tokenizer=lm.tokenizer
            )
        rep = storage_report(lm.model, spec, qm)
        out.print(_storage_table(spec.name, rep))
        secs = qm.quantize_seconds if qm else 0.0
        out.print(f"quantized {len(qm.tensors) if qm else 0} tensors in {secs:.1f} s")
        if qm is not None:
            warn_gptq_fallback(spec.name, qm.info)
        if spec.uses_reram:
            out.print(f"cell model: {spec.cells().describe()}")
        if json_path:
            payload = {
                "model": lm.source,
                "note": lm.note,
                "method": spec.name,
                "spec": spec.model_dump(),
                "quantize_seconds": secs,
                "info": qm.info if qm else {},
                "storage": rep,
                "env": run_env(),
            }
            write_json(json_path, payload)
            out.print(f"wrote {json_path}")


@app.command()
def ppl(
    method: MethodOpt = "fp",
    model: ModelOpt = None,
    bits: BitsOpt = None,
    group_size: GroupOpt = None,
    rho: RhoOpt = None,
    cell_bits: CellOpt = None,
    embeddings: EmbOpt = False,
    text: TextOpt = None,
    context: CtxOpt = 2048,
    max_windows: WinOpt = None,
    seeds: SeedsOpt = 3,
    noise_seed: NoiseSeedOpt = 0,
    json_path: JsonOpt = None,
    device: DeviceOpt = "cpu",
    rng: RngOpt = "torch",
) -> None:
    """Perplexity of a model, optionally quantized and read through noisy memories, over N noise seeds."""
    with errors():
        spec = spec_from_flags(method, bits, group_size, rho, cell_bits, embeddings)
        seed_list = check_seeds(seeds, noise_seed)
        check_eval(context, max_windows)
        check_output_file(json_path)
        check_device(device)
        check_rng(rng)
        src = read_text(text)
        lm = load(model, device)
        run_compare(lm, [spec], src, context, max_windows, seed_list, json_path, "perplexity", rng=rng)


@app.command()
def compare(
    methods: MethodsOpt = None,
    model: ModelOpt = None,
    text: TextOpt = None,
    context: CtxOpt = 2048,
    max_windows: WinOpt = None,
    seeds: SeedsOpt = 3,
    noise_seed: NoiseSeedOpt = 0,
    task: TaskOpt = None,
    task_limit: LimitOpt = None,
    data_dir: DataOpt = None,
    json_path: JsonOpt = None,
    device: DeviceOpt = "cpu",
    rng: RngOpt = "torch",
) -> None:
    """A matrix of methods on one model: bits, effective bits, compression, PPL mean ± std, time
    (and reasoning-task accuracy columns with --task)."""
    with errors():
        specs = unique_names([parse_method(m) for m in (methods or DEFAULT_COMPARE)], "methods")
        seed_list = check_seeds(seeds, noise_seed)
        check_eval(context, max_windows)
        check_limit(task_limit)
        check_output_file(json_path)
        check_device(device)
        check_rng(rng)
        src = read_text(text)
        tasks = load_task_items(task, task_limit, data_dir)
        lm = load(model, device)
        run_compare(lm, specs, src, context, max_windows, seed_list, json_path, "compare", tasks, task_limit, rng=rng)


@app.command()
def demo(
    text: TextOpt = None,
    context: CtxOpt = 1024,
    max_windows: WinOpt = 4,
    seeds: SeedsOpt = 2,
    json_path: Annotated[Path | None, typer.Option("--json", help="JSON output")] = Path("results/demo.json"),
) -> None:
    """The main job on the embedded default: a short compare of FP, RTN, MXINT4, eMEM-naive and QMC."""
    with errors():
        seed_list = check_seeds(seeds, 0)
        check_eval(context, max_windows)
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            check_output_file(json_path)
        src = read_text(text)
        lm = load(None)
        run_compare(
            lm,
            [parse_method(m) for m in DEFAULT_COMPARE],
            src,
            context,
            max_windows,
            seed_list,
            json_path,
            "demo (short run; see BENCHMARKS.md for the full numbers)",
            after=lambda rows: _demo_headline(lm, rows),
        )


def _demo_headline(lm: LoadedModel, rows: list[dict]) -> dict:
    """The deployment model's headline for the demo's methods: per decoded token, against FP16 on
    a Jetson AGX Orin-class platform (see `qmc deploy` for workloads, platforms and plots)."""
    from qmc_edge.cli.deploy_cmds import headline_table
    from qmc_edge.deploy.arch import from_model
    from qmc_edge.deploy.headline import headline_rows

    reports = {r["method"]: r["storage"] for r in rows if r["spec"]["method"] != "fp"}
    arch = from_model(lm.model, "smollm2-135m")  # the demo always runs the embedded default
    head = headline_rows(arch, reports, platforms=("orin_agx", "qmc_hetero"))
    title = "deployment model, per decoded token: ratios vs FP16 on orin_agx, nominal (min-max over ranged figures)"
    out.print(headline_table(head, title))
    return {"deployment": head}


@app.command()
def methods() -> None:
    """List the registered methods with their options, and the presets."""
    m = Table(title="methods (use as -m NAME or NAME:key=value,...; every option off its default shows in the label)")
    m.add_column("method")
    m.add_column("what it is")
    m.add_column("codes live in")
    m.add_column("options (default)")
    for name, cls in registered().items():
        opts = []
        for key in options(cls):
            f = cls.model_fields[key]
            default = cls.implied.get(key, f.default)
            opts.append(f"{key}={default}" if key != "label" else "label")
        m.add_row(name, cls.summary, cls.stored_in, ", ".join(opts))
    out.print(m)
    t = Table(title="presets")
    t.add_column("preset")
    t.add_column("spec")
    t.add_column("label")
    for k, v in PRESETS.items():
        t.add_row(k, v, parse_method(k).name)
    out.print(t)
    o = Table(title="options")
    o.add_column("key")
    o.add_column("methods")
    o.add_column("meaning")
    seen: dict[str, tuple[list[str], str]] = {}
    for name, cls in registered().items():
        for key in options(cls):
            entry = seen.setdefault(key, ([], cls.model_fields[key].description or ""))
            entry[0].append(name)
    for key, (names, desc) in seen.items():
        o.add_row(key, ", ".join(names), desc)
    out.print(o)


# Commands that live beside their feature (tasks, deployment model, artifacts) register themselves
# here, so each feature keeps its CLI next to its code. A module that is absent is simply skipped.
_EXTENSIONS = (
    "qmc_edge.cli.task_cmds",
    "qmc_edge.cli.deploy_cmds",
    "qmc_edge.cli.claims_cmds",
    "qmc_edge.cli.sweep_cmds",
    "qmc_edge.cli.artifact_cmds",
    "qmc_edge.cli.memory_cmds",
)


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
