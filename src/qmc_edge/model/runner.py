"""The evaluation engine: one method on one loaded model, quantized once, then every noise seed
read and evaluated (perplexity, tasks); one row per method. Used by the commands
(:mod:`qmc_edge.cli.eval_cmds`), sweeps and the benchmark scripts."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from qmc_edge.loaded import LoadedModel
from qmc_edge.methods import MethodSpec
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.model.perplexity import perplexity
from qmc_edge.tasks.data import MCItem
from qmc_edge.tasks.evaluate import evaluate_tasks, summarise

# progress(stage_description, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class EvalSettings:
    context: int = 2048
    max_windows: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    bos_id: int | None = None
    rng: str = "torch"  # the memory-noise generator (QuantizedModel.realise): torch, or philox


def _noop(_: str, __: int, ___: int) -> None:
    return None


def run_method(
    lm: LoadedModel,
    spec: MethodSpec,
    ids: torch.Tensor | None,
    cfg: EvalSettings,
    progress: Progress = _noop,
    tasks: dict[str, list[MCItem]] | None = None,
) -> dict:
    """Quantize once, then for every seed (once if the method's reads are deterministic) draw one
    chip (one noise realisation) and evaluate perplexity (unless ``ids`` is None) and the reasoning
    tasks on it. With read noise on (``read_noise``, ``read_share``), every perplexity window is a new
    read of that chip and the tasks take its read 0.

    A loaded artifact evaluated as ``fp`` is evaluated as what it stores: its own method, storage
    report and, for noisy memories, one memory-noise read per seed (the artifact's cells are the
    hardware's state; reading it noise-free would hide what the export is for).
    """
    stored = getattr(lm, "quantized", None) if spec.method == "fp" else None
    if stored is not None:
        qm, spec = stored, stored.spec
        report = lm.manifest.storage_report
    else:
        qm = quantize_model(
            lm.model, spec, lambda i, n: progress(f"quantize {spec.name}", i, n), tokenizer=lm.tokenizer
        )
        report = storage_report(lm.model, spec, qm)
    seeds = cfg.seeds if spec.noisy else (cfg.seeds[0] if cfg.seeds else 0,)
    per_seed = []
    task_runs: list[dict] = []
    try:
        for s in seeds:
            if qm is not None:
                qm.realise(lm.model, s if spec.noisy else None, rng=cfg.rng)
            suffix = f" seed {s}" if spec.noisy else ""
            entry: dict = {"seed": s if spec.noisy else None}
            if ids is not None:
                label = f"ppl {spec.name}{suffix}"
                reread = None
                if qm is not None and qm.rereads:
                    # Read noise: every window is a new read of the same chip (seed s).
                    def reread(i: int, s: int = s) -> None:
                        if i:  # read 0 is already in the model
                            qm.realise(lm.model, s, read=i, rng=cfg.rng)

                r = perplexity(
                    lm.model,
                    ids,
                    cfg.context,
                    cfg.max_windows,
                    cfg.bos_id,
                    lambda i, n, lab=label: progress(lab, i, n),
                    reread,
                )
                if reread is not None:
                    qm.realise(lm.model, s, rng=cfg.rng)  # the tasks below take read 0 of the chip
                    entry["reads"] = r.windows
                entry.update(r.to_dict())
            per_seed.append(entry)
            if tasks:
                task_runs.append(evaluate_tasks(lm.model, lm.tokenizer, tasks, progress, f"{spec.name}{suffix}"))
    finally:
        if qm is not None:
            qm.restore(lm.model)
    row = {
        "method": spec.name,
        "spec": spec.model_dump(),
        "bits": spec.nominal_bits,
        "noisy": spec.noisy,
        "cell_model": spec.cells().describe() if spec.uses_reram else None,
        "effective_bits": report["effective_bits"] if qm is not None else 16.0,
        "compression_quantized_layers": report["compression_quantized_layers"],
        "compression_whole_model": report["compression_whole_model"],
        "seeds": [r["seed"] for r in per_seed] if spec.noisy else [],
        "rng": cfg.rng if spec.noisy else None,
        "quantize_seconds": qm.quantize_seconds if qm is not None else 0.0,
        "quantize_info": qm.info if qm is not None else {},
        "storage": report,
    }
    if ids is not None:
        row.update(_ppl_fields(per_seed))
    if tasks:
        row["tasks"] = summarise(task_runs, row["seeds"] or [None])
    return row


def _ppl_fields(per_seed: list[dict]) -> dict:
    ppls = [r["ppl"] for r in per_seed]
    return {
        "ppl_mean": statistics.fmean(ppls),
        "ppl_std": statistics.stdev(ppls) if len(ppls) > 1 else 0.0,
        "ppl_per_seed": ppls,
        "eval": {
            **{k: per_seed[0][k] for k in ("windows", "windows_available", "capped", "context", "tokens_scored")},
            # reads of each chip: one per window with read noise, else one
            "reads_per_seed": per_seed[0].get("reads", 1),
        },
        "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in per_seed),
    }
