"""`qmc deploy`: a model + methods (or saved quantization reports) on platform files -> the headline
table (ratios vs FP16 on the conventional platform, with sensitivity bands), JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_METHODS = ["fp", "rtn4", "mxint4", "qmc3", "qmc2"]
DEFAULT_PLATFORMS = ["orin_agx", "qmc_hetero"]
BASELINE = ("FP16", "orin_agx")
EMBEDDED_ARCH = "smollm2-135m"


def _band(t: tuple[float, float, float]) -> str:
    lo, nom, hi = t
    if abs(hi - lo) < 0.005 * max(abs(nom), 1e-12):
        return f"{nom:.2f}x"
    return f"{nom:.2f}x ({lo:.2f}-{hi:.2f})"


def headline_table(rows: list[dict], title: str):
    """A rich table of :func:`qmc_edge.deploy.headline.headline_rows` output, plus the paper's figures."""
    from rich.table import Table

    from qmc_edge.deploy.headline import PAPER_HEADLINE

    t = Table(title=title)
    cols = [
        ("method", "left"),
        ("platform", "left"),
        ("eff. bits", "right"),
        ("weights MB", "right"),
        ("off-die MB/tok", "right"),
        ("mJ/tok", "right"),
        ("ms/tok", "right"),
        ("memory", "right"),
        ("off-die", "right"),
        ("off-package", "right"),
        ("energy", "right"),
        ("latency", "right"),
    ]
    for c, j in cols:
        t.add_column(c, justify=j)
    for r in rows:
        t.add_row(
            r["method"],
            r["platform"],
            f"{r['effective_bits']:.2f}",
            f"{r['weights_MB']:,.1f}",
            f"{r['off_die_MB_per_token']:,.1f}",
            f"{r['energy_mJ_per_token']:.2f}",
            f"{r['latency_ms_per_token']:.2f}",
            _band(r["ratio_memory"]),
            _band(r["ratio_off_die"]),
            _band(r["ratio_off_package"]),
            _band(r["ratio_energy"]),
            _band(r["ratio_latency"]),
        )
    p = PAPER_HEADLINE
    t.add_row(
        "QMC paper (abstract)",
        "unnamed edge platform",
        "",
        "",
        "",
        "",
        "",
        p["memory"],
        p["off_chip"],
        p["off_chip"],
        p["energy"],
        p["latency"],
    )
    return t


def _arch_for_report(data: dict, arch_opt: str | None, source: object = "the report"):
    from qmc_edge.deploy.arch import resolve_arch
    from qmc_edge.errors import QMCError

    if arch_opt:
        return resolve_arch(arch_opt)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise QMCError(f"report {source}: 'model' must be a string (the model path), got {type(model).__name__}")
    model = model or ""
    if model.endswith(".gguf") and "SmolLM2-135M" in model:
        return resolve_arch(EMBEDDED_ARCH)
    try:
        is_dir = bool(model) and Path(model).is_dir()
    except (OSError, ValueError):  # a path with a NUL byte, one that cannot be examined
        is_dir = False
    if is_dir:
        return resolve_arch(model)
    raise QMCError(
        f"report {source}: cannot tell the architecture of the report's model {model!r}; pass --arch NAME_OR_CONFIG"
    )


def _costs_from_reports(paths: list[Path], arch_opt: str | None):
    """Method costs from `qmc quantize --json` files; a file of any other shape is one QMCError line."""
    import math

    from qmc_edge.deploy.demand import MethodCost
    from qmc_edge.errors import QMCError

    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    def check_storage(st: object, p: Path) -> None:
        need = "expected a file written by `qmc quantize --json FILE`"
        if not isinstance(st, dict):
            got = "null" if st is None else type(st).__name__
            raise QMCError(f"report {p}: 'storage' must be an object (the storage report), got {got}; {need}")
        for key in ("quantized_params", "bits_by_memory", "bits_by_component"):
            if key not in st:
                raise QMCError(f"report {p}: 'storage' lacks {key!r}; {need}")
        if not number(st["quantized_params"]):
            raise QMCError(f"report {p}: storage.quantized_params must be a number >= 0; {need}")
        for key in ("bits_by_memory", "bits_by_component"):
            m = st[key]
            if not isinstance(m, dict) or not all(number(v) for v in m.values()):
                raise QMCError(f"report {p}: storage.{key} must map names to finite numbers >= 0; {need}")
        cell = st.get("reram_bits_per_cell")
        # An integer, or the mean over cells where a budget mixed cell sizes (1..3 bits).
        if cell is not None and (isinstance(cell, bool) or not number(cell) or not 1 <= cell <= 8):
            raise QMCError(f"report {p}: storage.reram_bits_per_cell must be null or a number in 1..8; {need}")

    costs, arch = {}, None
    for p in paths:
        try:
            raw = Path(p).read_bytes()
        except FileNotFoundError:
            raise QMCError(f"report not found: {p}") from None
        except IsADirectoryError:
            raise QMCError(f"report {p} is a directory; pass the file written by `qmc quantize --json FILE`") from None
        except OSError as exc:
            raise QMCError(f"report {p}: cannot read it ({exc.strerror or exc}); check its permissions") from None
        binary = QMCError(
            f"report {p} is binary or not UTF-8, not JSON text; pass the file written by `qmc quantize --json FILE`"
        )
        if b"\0" in raw:
            raise binary
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise binary from None
        except json.JSONDecodeError as exc:
            raise QMCError(
                f"report {p} is not JSON ({exc.msg} at line {exc.lineno}); "
                "pass the file written by `qmc quantize --json FILE`"
            ) from None
        except (ValueError, RecursionError) as exc:  # numbers beyond the int limit, absurd nesting
            raise QMCError(f"report {p} is not a usable JSON file ({type(exc).__name__}); rewrite it") from None
        if not isinstance(data, dict) or "storage" not in data:
            raise QMCError(f"report {p} has no 'storage' section; write it with `qmc quantize --json FILE`")
        spec = data.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise QMCError(f"report {p}: 'spec' must be an object, got {type(spec).__name__}; rewrite the report")
        spec = spec or {}
        check_storage(data["storage"], p)
        a = _arch_for_report(data, arch_opt, p)
        if arch is not None and a.name != arch.name:
            raise QMCError(f"reports are for different architectures ({arch.name}, {a.name} in {p}); pass --arch")
        arch = a
        name = str(data.get("method") or Path(p).stem)
        if spec.get("method") == "fp":
            costs["FP16"] = MethodCost.fp16()
            continue
        try:
            cost = MethodCost.from_report(name, data["storage"], a)
        except QMCError as exc:
            raise QMCError(f"report {p}: {exc}") from None
        qe = spec.get("quantize_embeddings")
        if spec.get("budget") is not None:  # a budget chooses per tensor: the report says what it quantized
            qe = None
        if qe is not None and not isinstance(qe, bool):
            raise QMCError(f"report {p}: spec.quantize_embeddings must be true, false or null")
        if qe is not None and qe != cost.quantized_embeddings:
            cost = MethodCost(
                name, cost.bits_per_weight, cost.components_per_weight, bool(qe), cost.cell_bits, cost.source
            )
        costs[name] = cost
    return arch, costs


def _costs_from_model(model: str | None, methods: list[str]):
    from qmc_edge.cli.common import load as _load
    from qmc_edge.cli.common import progress_bars as _progress
    from qmc_edge.cli.common import unique_names
    from qmc_edge.deploy.arch import from_model
    from qmc_edge.deploy.demand import MethodCost
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model, storage_report

    specs = unique_names([parse_method(m) for m in methods], "methods")
    lm = _load(model)
    arch = from_model(lm.model, EMBEDDED_ARCH if model is None else Path(model).name or model, lm.source)
    costs = {}
    with _progress() as prog:
        for spec in specs:
            if spec.method == "fp":
                costs["FP16"] = MethodCost.fp16()
                continue
            qm = quantize_model(lm.model, spec, lambda i, n, s=spec: prog(f"quantize {s.name}", i, n))
            rep = storage_report(lm.model, spec, qm)
            costs[spec.name] = MethodCost.from_report(spec.name, rep, arch)
    return arch, costs


def deploy(
    model: Annotated[
        str | None, typer.Option("--model", help="model to quantize (default: embedded SmolLM2-135M)")
    ] = None,
    methods: Annotated[list[str] | None, typer.Option("--method", "-m", help="method or preset, repeatable")] = None,
    reports: Annotated[
        list[Path] | None, typer.Option("--report", help="`qmc quantize --json` file(s) instead of quantizing")
    ] = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="architecture without weights: known name or config.json")
    ] = None,
    platforms: Annotated[
        list[str] | None, typer.Option("--platform", help="platform name or YAML file, repeatable")
    ] = None,
    prompt_len: Annotated[int, typer.Option("--prompt-len", help="prompt tokens")] = 512,
    gen_len: Annotated[int, typer.Option("--gen-len", help="generated tokens")] = 128,
    batch: Annotated[int, typer.Option("--batch", help="sequences decoded together")] = 1,
    bands: Annotated[bool, typer.Option("--bands/--no-bands", help="sensitivity bands over ranged figures")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="write results as JSON to this path")] = None,
    plots: Annotated[Path | None, typer.Option("--plots", help="folder for the breakdown PNG")] = None,
) -> None:
    """Deployment model: footprint, off-chip bytes, energy, latency and area per token, vs FP16."""
    from qmc_edge.cli.common import check_output_dir, out
    from qmc_edge.cli.common import errors as _errors
    from qmc_edge.cli.common import run_env as _env
    from qmc_edge.deploy import plots as plotmod
    from qmc_edge.deploy.demand import Workload
    from qmc_edge.deploy.headline import headline, resolve_platforms
    from qmc_edge.deploy.placement import describe
    from qmc_edge.errors import QMCError
    from qmc_edge.jsonio import check_writable, write_json

    with _errors():
        wl = Workload(prompt_len=prompt_len, gen_len=gen_len, batch=batch)
        plats = resolve_platforms(platforms or DEFAULT_PLATFORMS)
        check_writable(json_path)
        check_output_dir(plots, "--plots")
        if reports:
            if methods or model:
                raise QMCError("--report replaces quantizing: do not combine it with --model/--method")
            a, costs = _costs_from_reports(reports, arch)
        elif arch and not model:
            raise QMCError("--arch without weights needs --report FILE (a storage report to scale to it)")
        else:
            a, costs = _costs_from_model(model, methods or DEFAULT_METHODS)
            if arch:
                from qmc_edge.deploy.arch import resolve_arch

                a = resolve_arch(arch)
        if BASELINE[0] not in costs:
            from qmc_edge.deploy.demand import MethodCost

            costs = {BASELINE[0]: MethodCost.fp16(), **costs}
        names = [p.name for p in plats]
        if BASELINE[1] not in names:
            from qmc_edge.deploy.platform import load_platform

            plats = [load_platform(BASELINE[1]), *plats]
        head = headline(a, costs, plats, wl, BASELINE, bands=bands)
        rows, table, sens = head["rows"], head["table"], head["sensitivity"]
        title = (
            f"deployment: {a.name} ({a.total_params / 1e6:,.0f}M params), prompt {prompt_len}, gen {gen_len}, "
            f"batch {batch}; ratios vs {BASELINE[0]} on {BASELINE[1]}"
            + (f", band over {sens['corners']} corners of {len(sens['paths'])} ranged figures" if sens else "")
        )
        out.print(headline_table(rows, title))
        if sens:
            out.print("ranged figures: " + ", ".join(sens["paths"]))
        if plots is not None:
            png = plotmod.breakdown_plot(table, plots / f"deploy_{a.name}.png", title)
            out.print(f"wrote {png}")
        if json_path:
            payload = {
                "arch": a.to_dict(),
                "workload": vars(wl),
                "baseline": list(BASELINE),
                "platforms": {p.name: {"placement": describe(p), "file": p.model_dump()} for p in plats},
                "methods": {k: vars(v) for k, v in costs.items()},
                "headline": rows,
                "table": table,
                "sensitivity": sens,
                "env": _env(),
            }
            write_json(json_path, payload)
            out.print(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
