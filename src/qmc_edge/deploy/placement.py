"""Placement: which tier holds each kind of data, and whether it fits.

The data classes are the memories named in a quantization storage report (``reram``, ``mram``,
``dram``: where a method put its codes, scales and outliers), the tensors kept at FP16 (embeddings,
head, norms/biases) and the run-time data (KV cache, activations). A platform's ``placement`` maps
each class to one of its tiers; the map is a one-hot matrix so that the cost model can multiply it
with per-class byte counts for many design points at once.
"""

from __future__ import annotations

import numpy as np

from qmc_edge.deploy.platform import Platform
from qmc_edge.errors import QMCError

#: Data classes, in the order of the cost model's class axis.
CLASSES: tuple[str, ...] = (
    "reram",  # codes a method stores in multi-level ReRAM (storage report memory "reram")
    "mram",  # scales, zero points, outliers and their indices (memory "mram")
    "dram",  # codes/metadata a method stores in plain memory (memory "dram", incl. FP16 weights of "fp")
    "fp16_other",  # norms, biases and other small unquantized tensors
    "embeddings",  # input embedding table (also the head when tied)
    "head",  # untied output head
    "kv_cache",
    "activations",
)
WEIGHT_CLASSES = CLASSES[:6]


def tier_names(platforms: list[Platform]) -> list[str]:
    """Union of the platforms' tier names, in first-seen order (the cost model's tier axis)."""
    out: list[str] = []
    for p in platforms:
        for t in p.tiers:
            if t not in out:
                out.append(t)
    return out


def placement_matrix(platform: Platform, tiers: list[str]) -> np.ndarray:
    """(C, T) one-hot: row c has a 1 in the column of the tier that holds class c."""
    m = np.zeros((len(CLASSES), len(tiers)))
    for i, c in enumerate(CLASSES):
        m[i, tiers.index(getattr(platform.placement, c))] = 1.0
    return m


def check_capacity(platform: Platform, footprint_bits_by_class: np.ndarray, what: str) -> None:
    """Raise a one-line :class:`QMCError` naming the first tier that overflows and what fills it."""
    for tier, spec in platform.tiers.items():
        need = {
            c: float(footprint_bits_by_class[i]) / 8e6
            for i, c in enumerate(CLASSES)
            if getattr(platform.placement, c) == tier and footprint_bits_by_class[i] > 0
        }
        total = sum(need.values())
        cap = spec.capacity_MB.value
        if total > cap * (1 + 1e-9):
            parts = ", ".join(f"{c} {mb:,.1f} MB" for c, mb in sorted(need.items(), key=lambda kv: -kv[1]))
            raise QMCError(
                f"{what} does not fit platform {platform.name}: tier {tier} holds {cap:,.1f} MB but the "
                f"placement needs {total:,.1f} MB ({parts}); raise tiers.{tier}.capacity_MB or move data "
                "to another tier in placement"
            )


def describe(platform: Platform) -> dict[str, str]:
    """Class -> tier, for reports."""
    out = {c: getattr(platform.placement, c) for c in CLASSES}
    if platform.placement.load_from:
        out["load_from"] = platform.placement.load_from
    return out
