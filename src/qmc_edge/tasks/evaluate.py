"""Tasks x seeds: score every task on the model as it is now, and summarise over noise seeds.

The per-seed metrics are lm-eval's (acc, acc_norm with their standard errors over items); across
seeds we report the mean and the spread (sample standard deviation), because a noisy memory gives a
different model per read and both uncertainties matter to a reader.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from qmc_edge.tasks.data import TASKS, MCItem, load_task
from qmc_edge.tasks.scoring import score_items, task_metrics

Progress = Callable[[str, int, int], None]


def has_norm(name: str) -> bool:
    """acc_norm for ARC, HellaSwag and user files; BoolQ's two fixed answers make it meaningless."""
    return TASKS[name].has_acc_norm if name in TASKS else True


def load_tasks(
    names: Sequence[str], limit: int | None = None, data_dir: str | Path | None = None
) -> dict[str, list[MCItem]]:
    out: dict[str, list[MCItem]] = {}
    for n in names:
        name, items = load_task(n, limit, data_dir)
        out[name] = items
    return out


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer,
    tasks: dict[str, list[MCItem]],
    progress: Progress | None = None,
    label: str = "",
    keep_loglikelihoods: bool = False,
) -> dict[str, dict]:
    """Metrics per task for the model's current weights (one noise realisation, if any)."""
    res: dict[str, dict] = {}
    for name, items in tasks.items():
        cb = (lambda i, n, d=f"{name} {label}".strip(): progress(d, i, n)) if progress else None
        lls, secs = score_items(model, tokenizer, items, cb)
        m = task_metrics(items, lls, with_norm=has_norm(name))
        m["seconds"] = secs
        m["items_per_s"] = len(items) / secs if secs > 0 else float("inf")
        if keep_loglikelihoods:
            m["loglikelihoods"] = lls
        res[name] = m
    return res


def summarise(per_seed: list[dict[str, dict]], seeds: Sequence[int | None]) -> dict[str, dict]:
    """Per task: mean and spread over seeds of acc/acc_norm, the mean item-stderr, and items/s."""
    out: dict[str, dict] = {}
    for name in per_seed[0]:
        runs = [r[name] for r in per_seed]
        t: dict = {"n": runs[0]["n"], "seeds": list(seeds)}
        for key in ("acc", "acc_norm"):
            if key not in runs[0]:
                continue
            vals = [r[key] for r in runs]
            t[key] = statistics.fmean(vals)
            t[f"{key}_seed_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            t[f"{key}_stderr"] = statistics.fmean(r[f"{key}_stderr"] for r in runs)
            t[f"{key}_per_seed"] = vals
            t[f"{key}_stderr_per_seed"] = [r[f"{key}_stderr"] for r in runs]
        t["items_per_s"] = statistics.fmean(r["items_per_s"] for r in runs)
        out[name] = t
    return out
