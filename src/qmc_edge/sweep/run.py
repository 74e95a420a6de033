"""Running a sweep: each point quantized once, its seeds evaluated on that quantization, one Parquet
file per point written by the driver (:mod:`qmc_edge.sweep.store`).

The local executor orders the work by model so that each model loads once. The Ray executor
(:mod:`qmc_edge.sweep.ray_executor`, optional extra) runs :func:`run_point` in workers and returns
the rows to the driver, which writes them: the store never sees a half-written point either way.
"""

from __future__ import annotations

import datetime as dt
import json
import platform as pyplatform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from qmc_edge.errors import QMCError
from qmc_edge.sweep.spec import EMBEDDED, Point, SweepSpec
from qmc_edge.sweep.store import Store

#: on_point(done, failed, skipped, total, label): called after every point.
OnPoint = Callable[[int, int, int, int, str], None]


@dataclass
class ModelContext:
    """What every point of one model shares: the loaded model, its token ids, its tasks, its shapes."""

    lm: object
    ids: object
    bos: int | None
    tasks: dict | None
    arch: object
    text: str | None = None  # the perplexity text's label


@dataclass
class SweepSummary:
    total: int
    done: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def load_context(model: str, spec: SweepSpec, device: str = "cpu") -> ModelContext:
    from qmc_edge.deploy.arch import from_model
    from qmc_edge.loaded import bos_for
    from qmc_edge.model.loading import load_model
    from qmc_edge.model.perplexity import load_text, tokenize

    lm = load_model(None if model == EMBEDDED else model, device=device)
    src = load_text(None) if spec.eval.perplexity else None
    ids = tokenize(lm.tokenizer, src.text) if src else None
    tasks = None
    if spec.eval.tasks:
        from qmc_edge.tasks.evaluate import load_tasks

        tasks = load_tasks(spec.eval.tasks.names, spec.eval.tasks.limit)
    arch = from_model(lm.model, model, lm.source)
    return ModelContext(lm, ids, bos_for(lm.tokenizer), tasks, arch, src.label if src else None)


def _versions() -> str:
    import torch
    import transformers

    from qmc_edge import __version__
    from qmc_edge.provenance import RESULTS_VERSION, code_revision

    code = code_revision()
    return json.dumps(
        {
            "qmc_edge": __version__,
            "commit": code["commit"],
            "dirty": code["dirty"],
            "results_version": RESULTS_VERSION,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": pyplatform.python_version(),
        }
    )


def _deploy(ctx: ModelContext, method: str, storage: dict, platforms: list[str], spec: SweepSpec) -> str:
    from qmc_edge.deploy.demand import MethodCost, Workload
    from qmc_edge.deploy.headline import deploy_table

    try:
        cost = MethodCost.from_report(method, storage, ctx.arch)
    except QMCError:  # nothing quantized: the FP16 reference
        cost = MethodCost.fp16()
    wl = Workload(prompt_len=spec.workload.prompt_len, gen_len=spec.workload.gen_len)
    out = {}
    for r in deploy_table(ctx.arch, {method: cost}, platforms, wl, check=False):
        d = r["decode"]
        out[r["platform"]] = {
            "energy_mJ_per_token": d["energy_J"] * 1e3,
            "latency_ms_per_token": d["latency_s"] * 1e3,
            "off_die_MB_per_token": d["off_die_bytes"] / 1e6,
            "weights_MB": r["footprint_weights_bytes"] / 1e6,
            "fits": bool(r["fits"]),
        }
    return json.dumps(out)


def run_point(
    ctx: ModelContext, point: Point, spec: SweepSpec, device: str = "cpu", origin: str = "qmc sweep"
) -> list[dict]:
    """Quantize the point's method once and evaluate every seed: one row per seed (one row for a
    deterministic method), in the store's schema."""
    from qmc_edge.model.runner import EvalSettings, run_method
    from qmc_edge.torch_device import machine_label

    pp = spec.eval.perplexity
    cfg = EvalSettings(pp.context if pp else 2048, pp.windows if pp else None, spec.eval.seed_list, ctx.bos)
    t0 = time.perf_counter()
    r = run_method(ctx.lm, point.spec, ctx.ids, cfg, tasks=ctx.tasks)
    seconds = max(0.0, time.perf_counter() - t0 - r["quantize_seconds"])  # cached quantizations report theirs
    return result_rows(ctx, point, spec, r, seconds, machine_label(device), origin)


def _gptq_fallback(r: dict) -> str | None:
    """The layers GPTQ rounded to nearest (JSON list), or None for a method without GPTQ rounding."""
    info = r.get("quantize_info") or {}
    return json.dumps(info["nearest_rounding_fallback"]) if "nearest_rounding_fallback" in info else None


def result_rows(
    ctx: ModelContext,
    point: Point,
    spec: SweepSpec,
    r: dict,
    eval_seconds: float,
    machine: str,
    origin: str,
    date: str | None = None,
) -> list[dict]:
    """The store's rows of one point from :func:`qmc_edge.model.runner.run_method`'s result ``r``
    (completed now unless ``date`` says when)."""
    st = r["storage"]
    total_bits = st["model_MB"] * 8e6
    params = st["quantized_params"] + st["unquantized_params"]
    seeds = r["seeds"] or [None]
    tasks = r.get("tasks") or {}
    common = {
        "key": point.key,
        "sweep": spec.name,
        "model": point.model,
        "model_source": ctx.lm.source + (f" ({ctx.lm.note})" if getattr(ctx.lm, "note", "") else ""),
        "method": r["method"],
        "method_text": point.method_text,
        "family": point.spec.method,
        "spec_json": json.dumps(r["spec"], sort_keys=True),
        "noisy": bool(r["noisy"]),
        "ideal_memory": bool(getattr(point.spec, "ideal_memory", False)),
        "bits_per_weight": float(r["effective_bits"]),
        "whole_model_bits": total_bits / params if params else None,
        "weights_MB": st["model_MB"],
        "storage_json": json.dumps(st, sort_keys=True),
        "deploy_json": _deploy(ctx, r["method"], st, spec.platforms, spec),
        "quantize_seconds": float(r["quantize_seconds"]),
        "gptq_fallback": _gptq_fallback(r),
        "eval_seconds": eval_seconds,
        "versions_json": _versions(),
        "machine": machine,
        "origin": origin,
        "date": date or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    ev = r.get("eval") or {}
    rows = []
    for i, s in enumerate(seeds):
        per_task = {}
        for name, t in tasks.items():
            m = {"n": t["n"], "items_per_s": t["items_per_s"]}
            for k in ("acc", "acc_norm"):
                if t.get(f"{k}_per_seed") is not None:
                    m[k] = t[f"{k}_per_seed"][i]
                    m[f"{k}_stderr"] = t[f"{k}_stderr_per_seed"][i]
            per_task[name] = m
        rows.append(
            {
                **common,
                "seed": s,
                "ppl": r["ppl_per_seed"][i] if "ppl_per_seed" in r else None,
                "text": ctx.text if "ppl_per_seed" in r else None,
                "tokens_scored": ev.get("tokens_scored"),
                "windows": ev.get("windows"),
                "windows_available": ev.get("windows_available"),
                "context": ev.get("context"),
                "tasks_json": json.dumps(per_task, sort_keys=True) if per_task else None,
            }
        )
    return rows


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:400]


def failure_record(point: Point, exc: BaseException) -> dict:
    return {
        "key": point.key,
        "model": point.model,
        "method": point.method_text,
        "error": _one_line(exc),
        "traceback": traceback.format_exc(limit=8),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def record(store: Store, summary: SweepSummary, point: Point, rows: list[dict] | None, failure: dict | None) -> None:
    """Write one finished point (its rows, or its failure record) and count it; a store error for
    this point becomes its failure, so the other points go on. Both executors end every point here."""
    if rows is not None:
        try:
            store.write_point(point.key, rows)
            summary.done += 1
            return
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk for this point's file
            failure = failure_record(point, exc)
    store.write_failure(point.key, failure)
    summary.failed.append(failure)


def run_local(
    spec: SweepSpec,
    points: list[Point],
    store: Store,
    on_point: OnPoint | None = None,
    device: str = "cpu",
    context_loader: Callable[[str, SweepSpec, str], ModelContext] = load_context,
    origin: str = "qmc sweep",
) -> SweepSummary:
    """Every point not yet in the store, model by model; a failing point is recorded and the rest go on.
    A model that cannot be loaded fails all of its points with that one line."""
    t0 = time.perf_counter()
    done = store.done()
    summary = SweepSummary(total=len(points))
    by_model: dict[str, list[Point]] = {}
    for p in points:
        by_model.setdefault(p.model, []).append(p)
    report = on_point or (lambda *a: None)
    for model, pts in by_model.items():
        todo = [p for p in pts if p.key not in done]
        summary.skipped += len(pts) - len(todo)
        report(summary.done, len(summary.failed), summary.skipped, summary.total, f"{model}: {len(todo)} to run")
        if not todo:
            continue
        try:
            ctx = context_loader(model, spec, device)
        except Exception as exc:  # noqa: BLE001 - recorded per point, the other models go on
            for p in todo:
                record(store, summary, p, None, failure_record(p, exc))
            report(summary.done, len(summary.failed), summary.skipped, summary.total, f"{model}: cannot load")
            continue
        for p in todo:
            try:
                rows, failure = run_point(ctx, p, spec, device, origin), None
            except Exception as exc:  # noqa: BLE001 - one point's failure must not stop the sweep
                rows, failure = None, failure_record(p, exc)
            record(store, summary, p, rows, failure)
            report(summary.done, len(summary.failed), summary.skipped, summary.total, p.spec.name)
    summary.seconds = time.perf_counter() - t0
    return summary
