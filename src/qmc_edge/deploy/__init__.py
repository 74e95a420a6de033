"""Deployment model: footprint, off-chip traffic, energy, latency and area per token of a quantized
LLM placed across the memory tiers of an edge platform (LPDDR, on-package ReRAM, on-chip MRAM/SRAM).

Why a separate package: the quantizers say how many bits each weight costs and in which memory it
lives; this package says what those bits cost to read on a given platform, vectorised over design
points so that sweeps (models x bits x rho x platforms x uncertain hardware figures) are free.

Modules: ``platform`` (validated YAML platform files), ``arch`` (architectures from HF configs),
``placement`` (which data in which tier, capacity check), ``demand`` (what a method on a model and
workload asks of memory), ``system`` (the vectorised cost model), ``headline`` (tables, ratios
against a baseline, sensitivity bands, :func:`headline_rows`), ``validate`` (fit against measured
Jetson speeds, GenZ comparison) and ``plots``; the command is :mod:`qmc_edge.cli.deploy_cmds`.

May import :mod:`qmc_edge.methods` (storage reports), the layers below it and the package root;
nothing of evaluation.
"""

from __future__ import annotations

__all__ = ["headline_rows", "load_platform", "resolve_arch"]


def __getattr__(name: str):  # lazy: importing the package must not pull torch/transformers
    if name == "headline_rows":
        from qmc_edge.deploy.headline import headline_rows

        return headline_rows
    if name == "load_platform":
        from qmc_edge.deploy.platform import load_platform

        return load_platform
    if name == "resolve_arch":
        from qmc_edge.deploy.arch import resolve_arch

        return resolve_arch
    raise AttributeError(name)
