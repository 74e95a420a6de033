"""`qmc claims`: the paper's headline ratios, reached (or not) step by step from our default, with the
measured accuracy of every configuration a step implies (:mod:`qmc_edge.claims.ledger`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

DEFAULT_RESULTS = (Path("benchmarks") / "results", Path("benchmarks") / "store")


def _acc_text(acc: list[dict] | None) -> str:
    if acc is None:
        return ""
    measured = [a for a in acc if a.get("ppl") is not None]
    if not measured:
        return "not measured"
    parts = []
    for a in measured:
        s = f"{a['model']}: ppl {a['ppl']:.1f}"
        if a.get("fp_ppl"):
            s += f" (FP {a['fp_ppl']:.1f})"
        if a.get("arc_easy_acc_norm") is not None:
            s += f", ARC-E {a['arc_easy_acc_norm']:.3f}"
        if a.get("hellaswag_acc_norm") is not None:
            s += f", HS {a['hellaswag_acc_norm']:.3f}"
        parts.append(s)
    return "; ".join(parts)


def ledger_table(led: dict):
    from rich.table import Table

    from qmc_edge.claims.ledger import fmt_ratio

    p = led["paper"]
    if led["reached"]:
        verdict = f"reached at step {led['reached_at_step']}"
    else:
        verdict = "not reached"
    t = Table(
        title=f"{led['claim']} on {led['arch']}: paper {p['text']}, ours {fmt_ratio(led['default']['ratio'])} "
        f"by default, {fmt_ratio(led['final_ratio'])} after every step ({verdict})",
        title_justify="left",
    )
    for c, j in (("#", "right"), ("assumption", "left"), ("source", "left"), ("configuration", "left")):
        t.add_column(c, justify=j)
    t.add_column("ratio", justify="right")
    t.add_column("accuracy (WikiText-2, measured)", justify="left")

    def cfg(x: dict) -> str:
        return Text.assemble(x["configuration"], (f" ({x['does_not_fit']})", "red") if x.get("does_not_fit") else "")

    d = led["default"]
    t.add_row("0", "our default", "qmc-edge defaults", cfg(d), fmt_ratio(d["ratio"]), _acc_text(d["accuracy"]))
    for s in led["steps"]:
        src = s["source"]
        if s["kind"] != "sourced":
            shown = src if src.lower().startswith(("assumption", "est")) else f"{s['kind']}: {src}"
            src = Text(shown, style="yellow")
        t.add_row(str(s["step"]), s["assumption"], src, cfg(s), fmt_ratio(s["ratio"]), _acc_text(s.get("accuracy")))
    return t


def claims(
    arch: Annotated[str, typer.Option("--arch", help="architecture: known name or config.json")] = "smollm2-135m",
    method: Annotated[str, typer.Option("--method", "-m", help="the default configuration's method")] = "qmc3",
    platform: Annotated[str, typer.Option("--platform", help="the QMC platform (name or YAML)")] = "qmc_hetero",
    baseline_platform: Annotated[
        str, typer.Option("--baseline-platform", help="the FP16 baseline's platform (name or YAML)")
    ] = "orin_agx",
    claim: Annotated[
        list[str] | None, typer.Option("--claim", help="memory, off_chip, energy or latency; repeatable")
    ] = None,
    ledger: Annotated[Path | None, typer.Option("--ledger", help="an edited copy of the shipped ledger")] = None,
    results: Annotated[
        list[Path] | None,
        typer.Option(
            "--results",
            help="results JSON files, folders of them, or results stores to read accuracy from "
            "(default ./benchmarks/results and ./benchmarks/store)",
        ),
    ] = None,
    storage_model: Annotated[
        str | None, typer.Option("--storage-model", help="model quantized to measure storage (default: embedded)")
    ] = None,
    prompt_len: Annotated[int, typer.Option("--prompt-len", help="prompt tokens")] = 512,
    gen_len: Annotated[int, typer.Option("--gen-len", help="generated tokens")] = 128,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the ledgers as JSON to this path")] = None,
    plots: Annotated[Path | None, typer.Option("--plots", help="folder for one waterfall PNG per claim")] = None,
    show_ledger: Annotated[bool, typer.Option("--show-ledger", help="print the shipped ledger file and exit")] = False,
) -> None:
    """The paper's four headline ratios, each reached step by step from our default (or shown out of
    reach, and why), every step sourced or marked as an assumption, with the measured accuracy."""
    from importlib import resources

    from qmc_edge.claims.accuracy import results_files, results_with_rows
    from qmc_edge.claims.ledger import CLAIMS, load_ledger, run_ledger, storage_cost_fn
    from qmc_edge.cli.common import check_output_dir, out, progress_bars, run_env
    from qmc_edge.cli.common import errors as _errors
    from qmc_edge.cli.common import load as _load
    from qmc_edge.deploy.arch import resolve_arch
    from qmc_edge.deploy.demand import Workload
    from qmc_edge.deploy.platform import load_platform
    from qmc_edge.errors import QMCError
    from qmc_edge.jsonio import check_writable, write_json
    from qmc_edge.methods import parse_method

    if show_ledger:
        typer.echo((resources.files("qmc_edge.claims") / "claims.yaml").read_text(encoding="utf-8"))
        return
    with _errors():
        led = load_ledger(ledger)
        names = claim or [c for c in CLAIMS if c in led.claims] + [c for c in led.claims if c not in CLAIMS]
        unknown = [c for c in names if c not in led.claims]
        if unknown:
            raise QMCError(f"unknown claim {unknown[0]!r}; the ledger has: {', '.join(led.claims)}")
        try:
            spec = parse_method(method)
        except ValueError as exc:
            raise QMCError(f"--method: {exc}") from None
        wl = Workload(prompt_len=prompt_len, gen_len=gen_len)
        qmc_p, base_p = load_platform(platform), load_platform(baseline_platform)
        a = resolve_arch(arch)
        if results is None:
            files = results_files([p for p in DEFAULT_RESULTS if p.is_dir()])
        else:
            files = results_files(results)
        files = results_with_rows(files)  # read and checked before the model loads; what is counted
        check_writable(json_path)
        check_output_dir(plots, "--plots")
        lm = _load(storage_model)
        ledgers = []
        with progress_bars() as prog:
            cost_of = storage_cost_fn(lm.model, a, prog, lm.tokenizer)
            for c in names:
                ledgers.append(run_ledger(a, c, led.claims[c], spec, qmc_p, base_p, cost_of, files, wl))
        for x in ledgers:
            out.print(ledger_table(x))
            if x["why_not"]:
                out.print(f"  why not reached: {x['why_not']}")
            if x["not_measured"]:
                out.print(Text(f"  accuracy not measured for: {', '.join(x['not_measured'])}", style="yellow"))
        out.print(
            f"storage measured on {lm.source} and applied per weight to {a.name}; accuracy read from "
            f"{len(files)} results file(s); every reference model was already quantized upstream"
        )
        if plots is not None:
            from qmc_edge.deploy.plots import waterfall_plot

            for x in ledgers:
                png = waterfall_plot(x, plots / f"claims_{a.name}_{x['claim']}.png")
                out.print(f"wrote {png}")
        if json_path:
            payload = {
                "arch": a.to_dict(),
                "method": spec.name,
                "platform": qmc_p.name,
                "baseline": ["FP16", base_p.name],
                "workload": vars(wl),
                "storage_model": lm.source,
                "results_files": [str(f) for f in files],
                "claims": ledgers,
                "env": run_env(),
            }
            write_json(json_path, payload)
            out.print(f"wrote {json_path}")


def register(app: typer.Typer) -> None:
    app.command("claims")(claims)
