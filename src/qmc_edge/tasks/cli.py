"""`qmc tasks`: zero-shot reasoning accuracy of a model, quantized or not, over noise seeds."""

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    from .. import cli as c

    @app.command()
    def tasks(
        task: c.TaskOpt = None,
        limit: c.LimitOpt = None,
        methods: Annotated[
            list[str] | None, typer.Option("--method", "-m", help="method or preset per row (default: fp)")
        ] = None,
        model: c.ModelOpt = None,
        seeds: c.SeedsOpt = 3,
        seed: c.SeedOpt = 0,
        data_dir: c.DataOpt = None,
        json_path: c.JsonOpt = None,
        device: c.DeviceOpt = "cpu",
    ) -> None:
        """Zero-shot multiple-choice accuracy (acc, acc_norm ± stderr) as lm-evaluation-harness scores it."""
        from .data import TASKS

        with c._errors():
            specs = [c.parse_method(m) for m in (methods or ["fp"])]
            if json_path:
                c.check_writable(json_path)
            loaded = c._load_tasks(task or list(TASKS), limit, data_dir)
            lm = c._load(model, device)
            c._run_compare(
                lm,
                specs,
                None,
                0,
                None,
                seeds,
                seed,
                json_path,
                "tasks",
                loaded,
                with_ppl=False,
                task_limit=limit,
            )
