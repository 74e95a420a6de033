"""Run methods x seeds on one loaded model and one token stream: the engine behind `compare`,
`ppl`, `demo` and the benchmark script."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .methods import MethodSpec
from .model_io import LoadedModel
from .perplexity import perplexity
from .quantize_model import quantize_model, storage_report

# progress(stage_description, done, total)
Progress = Callable[[str, int, int], None]


@dataclass
class EvalSettings:
    context: int = 2048
    max_windows: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    bos_id: int | None = None


def _noop(_: str, __: int, ___: int) -> None:
    return None


def run_method(
    lm: LoadedModel, spec: MethodSpec, ids: torch.Tensor, cfg: EvalSettings, progress: Progress = _noop
) -> dict:
    """Quantize, then perplexity over every seed (once if the method's reads are deterministic)."""
    qm = quantize_model(lm.model, spec, lambda i, n: progress(f"quantize {spec.name}", i, n))
    report = storage_report(lm.model, spec, qm)
    seeds = cfg.seeds if spec.noisy else (cfg.seeds[0] if cfg.seeds else 0,)
    per_seed = []
    try:
        for s in seeds:
            if qm is not None:
                qm.realise(lm.model, seed=s)
            label = f"ppl {spec.name}" + (f" seed {s}" if spec.noisy else "")
            r = perplexity(
                lm.model, ids, cfg.context, cfg.max_windows, cfg.bos_id, lambda i, n, lab=label: progress(lab, i, n)
            )
            per_seed.append({"seed": s if spec.noisy else None, **r.to_dict()})
    finally:
        if qm is not None:
            qm.restore(lm.model)
    ppls = [r["ppl"] for r in per_seed]
    return {
        "method": spec.name,
        "spec": spec.model_dump(),
        "bits": spec.bits if spec.method not in ("fp", "mxint4") else (16 if spec.method == "fp" else 4),
        "noisy": spec.noisy,
        "device": spec.device().describe() if spec.uses_reram else None,
        "effective_bits": report["effective_bits"] if qm is not None else 16.0,
        "compression_quantized_layers": report["compression_quantized_layers"],
        "compression_whole_model": report["compression_whole_model"],
        "ppl_mean": statistics.fmean(ppls),
        "ppl_std": statistics.stdev(ppls) if len(ppls) > 1 else 0.0,
        "seeds": [r["seed"] for r in per_seed] if spec.noisy else [],
        "ppl_per_seed": ppls,
        "quantize_seconds": qm.quantize_seconds if qm is not None else 0.0,
        "eval": {k: per_seed[0][k] for k in ("windows", "windows_available", "capped", "context", "tokens_scored")},
        "tokens_per_s": statistics.fmean(r["tokens_per_s"] for r in per_seed),
        "storage": report,
    }
