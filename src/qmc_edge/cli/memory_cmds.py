"""`qmc cells`: the ReRAM cell-model files (shipped, or given by path) with their cell error rates as
they age."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qmc_edge.cli.common import JsonOpt, check_output_file, errors, out, unique_names

FileOpt = Annotated[
    list[Path] | None,
    typer.Option("--file", "-f", help="a cell-model YAML file to list beside the shipped ones; repeat"),
]
AgeOpt = Annotated[
    list[str] | None,
    typer.Option("--age", help="age since programming to report (1s, 10min, 1h, 1d, 1w, 1y, 10y); repeat"),
]
NoiseScaleOpt = Annotated[float, typer.Option("--noise-scale", help="multiplier on the programmed sigmas (0-100]")]
WriteVerifyOpt = Annotated[bool, typer.Option("--write-verify", help="narrow the programmed sigmas (write-verify)")]
ReadNoiseOpt = Annotated[bool, typer.Option("--read-noise", help="add per-read noise to the error rates")]
ReferenceOpt = Annotated[
    str,
    typer.Option("--reference", help="read thresholds: fixed (set at programming) or aged (follow the cells)"),
]


def _rate(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{x:.1e}"


def register(app: typer.Typer) -> None:
    @app.command("devices", hidden=True)
    def devices() -> None:
        """Renamed: `qmc cells` (\"device\" means a torch device everywhere else)."""
        with errors():
            from qmc_edge.errors import QMCError

            raise QMCError("`qmc devices` is now `qmc cells` (the ReRAM cell models); run qmc cells")

    @app.command("cells")
    def cells(
        files: FileOpt = None,
        ages: AgeOpt = None,
        noise_scale: NoiseScaleOpt = 1.0,
        write_verify: WriteVerifyOpt = False,
        read_noise: ReadNoiseOpt = False,
        reference: ReferenceOpt = "fixed",
        json_path: JsonOpt = None,
    ) -> None:
        """List the ReRAM cell models with their cell error rates (mean over levels) fresh and at each age."""
        from rich.table import Table

        from qmc_edge.jsonio import write_json
        from qmc_edge.memory.files import format_age, load_cell_model, parse_age, shipped_cell_models
        from qmc_edge.memory.models import DEFAULT_AGES, cell_model_table

        with errors():
            check_output_file(json_path)
            age_list = list(ages or DEFAULT_AGES)
            for a in age_list:
                parse_age(a)
            specs = unique_names(
                [load_cell_model(n) for n in shipped_cell_models()] + [load_cell_model(Path(f)) for f in files or []],
                "cell models",
            )
            rows = cell_model_table(
                specs,
                age_list,
                noise_scale=noise_scale,
                write_verify=write_verify,
                read_noise=read_noise,
                reference=reference,
            )
        t = Table(title="ReRAM cell models: cell error rate, mean over levels (worst level), by age since programming")
        t.add_column("cell model")
        t.add_column("bits/cell", justify="right")
        t.add_column("fresh", justify="right")
        for a in age_list:
            t.add_column(a, justify="right")
        t.add_column("measured to", justify="right")
        t.add_column("source of the levels")
        for r in rows:
            cells = [
                r["name"],
                str(r["bits_per_cell"]),
                f"{_rate(r['mean_cell_error_rate'])} ({_rate(r['worst_level_error_rate'])})",
            ]
            for a in age_list:
                mark = "*" if a in r["extrapolated"] else ""
                cells.append(f"{_rate(r['error_rate_at'][a])} ({_rate(r['worst_error_rate_at'][a])}){mark}")
            cells.append(format_age(r["measured_to_s"]) if r["measured_to_s"] is not None else "no ageing")
            cells.append(r["source"])
            t.add_row(*cells)
        out.print(t)
        out.print(
            "* beyond the longest measured time: the retention fit is extrapolated. Fresh = the level table "
            f"(1 s after programming). Read thresholds: {reference}.",
            highlight=False,
        )
        if json_path is not None:
            with errors():
                write_json(
                    json_path,
                    {
                        "ages": age_list,
                        "noise_scale": noise_scale,
                        "write_verify": write_verify,
                        "read_noise": read_noise,
                        "reference": reference,
                        "cell_models": rows,
                    },
                )
            out.print(f"wrote {json_path}")
