"""`qmc sweep SPEC --store DIR` and `qmc report STORE`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from qmc_edge.cli.common import tagged


def sweep(
    spec_file: Annotated[Path | None, typer.Argument(help="sweep spec YAML (see --example)")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="results store folder (created if missing)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local, or ray (pip install 'qmc-edge[ray]')")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster: auto or HOST:PORT (default: Ray on this machine)")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Ray: CPUs to start locally (default all)")] = None,
    device: Annotated[str, typer.Option("--device", help="where models run: cpu or cuda")] = "cpu",
    example: Annotated[bool, typer.Option("--example", help="print an example spec and exit")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list the points and what is done; run nothing")] = False,
) -> None:
    """Run every (model, method configuration) of a spec not yet in the store; resumable, failures recorded."""

    from qmc_edge.cli.common import errors, out
    from qmc_edge.errors import QMCError
    from qmc_edge.sweep.spec import EXAMPLE, expand, load_sweep_spec
    from qmc_edge.sweep.store import Store
    from qmc_edge.torch_device import check_device

    if example:
        typer.echo(EXAMPLE, nl=False)
        return
    with errors():
        if spec_file is None or store is None:
            raise QMCError("give a spec file and --store DIR (qmc sweep --example prints a spec)")
        if executor not in ("local", "ray"):
            raise QMCError(f"--executor must be local or ray, got {executor!r}")
        check_device(device)
        spec = load_sweep_spec(spec_file)
        points = expand(spec)
        st = Store(store)
        valid, damaged = st.scan()
        done = set(valid)
        todo = [p for p in points if p.key not in done]
        out.print(f"sweep {spec.name}: {len(points)} points, {len(points) - len(todo)} already in {store}")
        redo = sorted(k for k in damaged if k in {p.key for p in points})
        if redo:
            out.print(
                tagged(f"{len(redo)} damaged point files", "yellow", f"in {store} are recomputed: ")
                + ", ".join(f"{k} ({damaged[k]})" for k in redo[:3])
                + (" ..." if len(redo) > 3 else "")
            )
        if dry_run:
            for p in points:
                out.print(f"  {'done' if p.key in done else 'todo'}  {p.model}  {p.spec.name}  [{p.key}]")
            return
        if executor == "ray":
            from qmc_edge.sweep.ray_executor import check_ray

            check_ray()
        st.create()
        with st.locked():
            _record_spec(Path(spec_file), st.root / "sweep.yaml")
            origin = f"qmc sweep {spec_file} --device {device} --executor {executor}"
            summary = _run(spec, points, st, executor, address, workers, device, origin)
        out.print(
            f"done {summary.done}, skipped {summary.skipped} (already in the store), failed {len(summary.failed)} "
            f"in {summary.seconds:.0f} s"
        )
        for f in summary.failed:
            # escaped: an error names extras like qmc-edge[calibration], which rich would take for markup
            out.print(tagged("failed", "red", f"{f['model']} / {f['method']}: {f['error']}"))
        out.print(f"report: qmc report {store}")


def _record_spec(spec_file: Path, copy: Path) -> None:
    """Keep the spec beside its results (nothing to do when the spec is that copy)."""
    from qmc_edge.errors import QMCError

    try:
        if copy.exists() and copy.samefile(spec_file):
            return
        shutil.copyfile(spec_file, copy)
    except OSError as exc:
        raise QMCError(f"cannot write {copy} ({exc.strerror or exc}); give a writable --store") from None


def _run(spec, points, st, executor, address, workers, device, origin):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from qmc_edge.cli.common import console

    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as prog:
        task = prog.add_task("points", total=len(points), failed=0)

        def on_point(done: int, failed: int, skipped: int, total: int, label: str) -> None:
            prog.update(task, completed=done + failed + skipped, failed=failed, description=f"points: {label[:50]}")

        if executor == "ray":
            from qmc_edge.sweep.ray_executor import run_ray

            return run_ray(spec, points, st, on_point, device, address, workers, origin=origin)
        from qmc_edge.sweep.run import run_local

        return run_local(spec, points, st, on_point, device, origin=origin)


def report(
    store: Annotated[Path, typer.Argument(help="results store folder written by `qmc sweep`")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="folder for the page and plots (default: the store)")
    ] = None,
) -> None:
    """Pareto frontiers (PNG) and a self-contained Markdown and HTML page from a results store."""
    from qmc_edge.cli.common import errors, out
    from qmc_edge.sweep.report import write_report

    with errors():
        files = write_report(store, out_dir)
        damaged = files.pop("damaged")
        for k, p in files.items():
            out.print(f"wrote {k}: {p}")
        for key, why in sorted(damaged.items()):
            out.print(tagged("damaged point", "yellow", f"{key}: {why}; left out, recomputed by qmc sweep"))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("report")(report)
