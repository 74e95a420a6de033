"""The Ray executor (optional extra ``qmc-edge[ray]``): one Ray task per point, its seeds inside.

Workers load each model once per worker process (cached between tasks), run
:func:`qmc_edge.sweep.run.run_point` and return the rows; only the driver writes the store, as each
task completes, so a point is whole or absent. A point's own error is caught in the worker and
returned as a failure record (no retry: it would fail again); a lost worker is retried by Ray
(``max_retries``). With ``--device cuda`` each task asks Ray for one GPU. Without ``--address`` Ray
starts on this machine (``--workers`` CPUs), which is how a laptop uses it.
"""

from __future__ import annotations

from qmc_edge.errors import QMCError
from qmc_edge.sweep.run import OnPoint, SweepSummary, failure_record, load_context, record, run_point
from qmc_edge.sweep.spec import Point, SweepSpec
from qmc_edge.sweep.store import Store

#: Per worker process: model -> its loaded context (a worker runs many points of one model).
_CONTEXTS: dict[tuple[str, str], object] = {}
MAX_RETRIES = 2


def check_ray() -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        raise QMCError("--executor ray needs Ray: pip install 'qmc-edge[ray]'") from None


def _work(spec: SweepSpec, point: Point, device: str, origin: str) -> tuple[str, list[dict] | None, dict | None]:
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    try:
        key = (point.model, device)
        if key not in _CONTEXTS:
            _CONTEXTS.clear()  # one model per worker at a time: memory
            _CONTEXTS[key] = load_context(point.model, spec, device)
        return point.key, run_point(_CONTEXTS[key], point, spec, device, origin), None
    except Exception as exc:  # noqa: BLE001 - returned to the driver as the point's failure
        return point.key, None, failure_record(point, exc)


def run_ray(
    spec: SweepSpec,
    points: list[Point],
    store: Store,
    on_point: OnPoint | None = None,
    device: str = "cpu",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_task: int = 1,
    origin: str = "qmc sweep --executor ray",
) -> SweepSummary:
    import time

    import ray

    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        kw = {"address": address} if address else {"num_cpus": workers}
        ray.init(include_dashboard=False, log_to_driver=False, **kw)
    try:
        gpus = 1 if device.startswith("cuda") else 0
        remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus, max_retries=MAX_RETRIES)(_work)
        done = store.done()
        summary = SweepSummary(total=len(points))
        todo = [p for p in points if p.key not in done]
        summary.skipped = len(points) - len(todo)
        report = on_point or (lambda *a: None)
        # Points of one model next to each other, so workers reuse a loaded model.
        todo.sort(key=lambda p: p.model)
        of_ref = {remote.remote(spec, p, device, origin): p for p in todo}
        pending = list(of_ref)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            p = of_ref[ready[0]]
            try:
                _, rows, failure = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the worker died past its retries
                rows, failure = None, failure_record(p, exc)
            record(store, summary, p, rows, failure)
            report(summary.done, len(summary.failed), summary.skipped, summary.total, p.spec.name)
        summary.seconds = time.perf_counter() - t0
        return summary
    finally:
        if started:
            ray.shutdown()
