"""`qmc tasks`: zero-shot reasoning accuracy of a model, quantized or not, over noise seeds."""

import typer

from qmc_edge.cli.common import (
    DataOpt,
    DeviceOpt,
    JsonOpt,
    LimitOpt,
    MethodsOpt,
    ModelOpt,
    NoiseSeedOpt,
    RngOpt,
    SeedsOpt,
    TaskOpt,
    check_limit,
    check_output_file,
    check_rng,
    check_seeds,
    errors,
    load,
    unique_names,
)


def register(app: typer.Typer) -> None:
    @app.command()
    def tasks(
        task: TaskOpt = None,
        limit: LimitOpt = None,
        methods: MethodsOpt = None,
        model: ModelOpt = None,
        seeds: SeedsOpt = 3,
        noise_seed: NoiseSeedOpt = 0,
        data_dir: DataOpt = None,
        json_path: JsonOpt = None,
        device: DeviceOpt = "cpu",
        rng: RngOpt = "torch",
    ) -> None:
        """Zero-shot multiple-choice accuracy (acc, acc_norm ± stderr) as lm-evaluation-harness scores it."""
        from qmc_edge.cli.eval_cmds import load_task_items, run_compare
        from qmc_edge.methods import parse_method
        from qmc_edge.tasks.data import TASKS
        from qmc_edge.torch_device import check_device

        with errors():
            specs = unique_names([parse_method(m) for m in (methods or ["fp"])], "methods")
            seed_list = check_seeds(seeds, noise_seed)
            check_limit(limit)
            check_output_file(json_path)
            check_device(device)
            check_rng(rng)
            loaded = load_task_items(task or list(TASKS), limit, data_dir)
            lm = load(model, device)
            run_compare(lm, specs, None, 0, None, seed_list, json_path, "tasks", loaded, task_limit=limit, rng=rng)
