"""The vectorised cost model: footprint, bytes per tier, off-chip traffic, energy, latency and area.

Model (batch-1 decode unless a workload says otherwise; every choice is stated because every one of
them moves the headline ratios):

* **Decode**: every weight bit is read once per step from its tier (weights are shared by the batch);
  the input embedding contributes one row per token, the output head (tied or not) all of its
  vocab x hidden weights. The KV cache is read for every attended position (averaged over the
  generated tokens: prompt + (gen-1)/2) and written for one position per token. Activations stay in
  the tier named by the placement (SRAM), a small approximate count.
* **Prefill**: weights read once per prompt chunk (one chunk by default), compute 2 x params x tokens
  plus attention, KV written once per prompt position.
* **Latency** = overhead + combine(per-tier transfer times) (+ or max) compute time. Per-tier time =
  bytes / (bandwidth x that tier's efficiency); ``max`` when tiers are read in parallel over their own
  interfaces, ``sum`` when serialized (a platform option, ``latency.tier_combine``). Compute time
  includes dequantization (quantized weights read / the platform's ``dequant.weights_per_ns``).
* **Energy** = sum over tiers of bits x pJ/bit (read and write) + FLOPs x pJ/FLOP (the same for every
  method: dequantized weights feed the same FP16 datapath) + dequantization (pJ per quantized weight
  read + pJ per outlier gathered, ``dequant`` in the platform file) + static power x latency, where static
  power = leakage per MB x (installed capacity, or only the powered arrays for power-gated
  non-volatile tiers).
* **Off-chip**: bytes moved to/from tiers off the compute die (``package`` and ``board``) and, stricter,
  off the package (``board`` only). Both are reported.
* **Area**: bits held per on-die / on-package tier / density (ReRAM: cells, i.e. bits / bits-per-cell).

Everything is numpy with broadcasting: a demand (per method x model x workload) of shape (..., C) meets
platform arrays of shape (..., T) and one call evaluates any number of design points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmc_edge.deploy.demand import Demand
from qmc_edge.deploy.placement import CLASSES, WEIGHT_CLASSES, placement_matrix
from qmc_edge.deploy.platform import Platform, tier_bandwidth
from qmc_edge.errors import QMCError


# -------------------------------------------------------------------------------- platform arrays
@dataclass
class PlatformArrays:
    """One or many variants of platforms as arrays over a common tier axis T."""

    tiers: list[str]
    bw_Bps: np.ndarray  # (..., T) nominal bandwidth (bytes/s); 0 where the platform lacks the tier
    read_pj: np.ndarray
    write_pj: np.ndarray
    leak_W_per_MB: np.ndarray
    gated: np.ndarray  # bool (T,): non-volatile tiers that power only the arrays being read
    active_MB: np.ndarray  # powered capacity of a gated tier (inf for others)
    density: np.ndarray  # Mb/mm^2, nan for board tiers
    off_die: np.ndarray  # bool (T,)
    off_package: np.ndarray
    capacity_bits: np.ndarray
    placement: np.ndarray  # (C, T), or (..., C, T) for stacked platforms
    flops_s: np.ndarray  # (...)
    pj_flop: np.ndarray
    overhead_s: np.ndarray
    bw_eff: np.ndarray  # (..., T): each tier's achieved share of its nominal bandwidth
    dq_pj_weight: np.ndarray  # (...) dequantization energy per quantized weight read
    dq_pj_outlier: np.ndarray
    dq_weights_s: np.ndarray  # dequantization throughput (inf = free: a platform without `dequant`)
    combine_max: np.ndarray  # bool
    overlap: np.ndarray  # bool


def platform_arrays(
    platform: Platform, tiers: list[str], overrides: dict[str, np.ndarray] | None = None
) -> PlatformArrays:
    """Arrays for one platform; ``overrides`` maps figure paths (``tiers.lpddr5.read_pj_per_bit``) to
    arrays of values, giving that many variants (the sensitivity sweep) without building objects."""
    o = overrides or {}
    n = next((np.shape(v) for v in o.values()), ())

    def val(path: str, fig) -> np.ndarray:
        return np.broadcast_to(np.asarray(o.get(path, fig.value), dtype=float), n)

    T = len(tiers)

    def zeros() -> np.ndarray:
        return np.zeros((*n, T))

    bw, rd, wr, leak, cap = zeros(), zeros(), zeros(), zeros(), zeros()
    eff = np.ones((*n, T))  # 1 where the platform lacks the tier (no bytes go there)
    active = np.full((*n, T), np.inf)
    gated = np.zeros(T, bool)
    dens = np.full((*n, T), np.nan)
    off_die = np.zeros(T, bool)
    off_pkg = np.zeros(T, bool)
    for name, t in platform.tiers.items():
        j = tiers.index(name)
        pre = f"tiers.{name}."
        bw[..., j] = tier_bandwidth(name, t, val)
        # A tier's own efficiency, else the platform's (whose path then moves every such tier jointly).
        eff[..., j] = (
            val(pre + "bw_efficiency", t.bw_efficiency)
            if t.bw_efficiency is not None
            else val("latency.bw_efficiency", platform.latency.bw_efficiency)
        )
        rd[..., j] = val(pre + "read_pj_per_bit", t.read_pj_per_bit)
        wr[..., j] = val(pre + "write_pj_per_bit", t.write_pj_per_bit)
        leak[..., j] = val(pre + "leakage_mW_per_MB", t.leakage_mW_per_MB) * 1e-3
        if t.power_gated:
            gated[j] = True
            active[..., j] = val(pre + "active_MB", t.active_MB)
        cap[..., j] = val(pre + "capacity_MB", t.capacity_MB) * 8e6
        if t.density_Mb_per_mm2 is not None:
            dens[..., j] = val(pre + "density_Mb_per_mm2", t.density_Mb_per_mm2)
        off_die[j] = t.location != "die"
        off_pkg[j] = t.location == "board"
    c, lat, dq = platform.compute, platform.latency, platform.dequant
    zero = np.zeros(n)
    return PlatformArrays(
        tiers=tiers,
        bw_Bps=bw,
        read_pj=rd,
        write_pj=wr,
        leak_W_per_MB=leak,
        gated=gated,
        active_MB=active,
        density=dens,
        off_die=off_die,
        off_package=off_pkg,
        capacity_bits=cap,
        placement=placement_matrix(platform, tiers),  # (C, T): one placement per platform file
        flops_s=val("compute.fp16_tflops", c.fp16_tflops) * val("compute.efficiency", c.efficiency) * 1e12,
        pj_flop=val("compute.pj_per_flop", c.pj_per_flop),
        overhead_s=val("latency.overhead_ms", lat.overhead_ms) * 1e-3,
        bw_eff=eff,
        dq_pj_weight=val("dequant.pj_per_weight", dq.pj_per_weight) if dq else zero,
        dq_pj_outlier=val("dequant.pj_per_outlier", dq.pj_per_outlier) if dq else zero,
        dq_weights_s=val("dequant.weights_per_ns", dq.weights_per_ns) * 1e9 if dq else np.full(n, np.inf),
        combine_max=np.broadcast_to(lat.tier_combine == "max", n),
        overlap=np.broadcast_to(lat.compute_overlap, n),
    )


# ------------------------------------------------------------------------------------ evaluation
def to_tiers(bits_c: np.ndarray, placement: np.ndarray) -> np.ndarray:
    """(..., C) x (..., C, T) -> (..., T), as a (batched) matrix product: no (..., C, T) temporary."""
    return np.matmul(bits_c[..., None, :], placement)[..., 0, :]


def static_power(stored_t: np.ndarray, p: PlatformArrays) -> np.ndarray:
    """Leakage (W) per tier: the installed capacity of volatile tiers; for power-gated non-volatile
    tiers only the powered arrays, and none when the tier holds no data of this design point."""
    mb = np.where(p.gated, np.minimum(p.active_MB, stored_t / 8e6), p.capacity_bits / 8e6)
    return p.leak_W_per_MB * mb


def _phase(read_t, write_t, flops, dq, d_batch, static_W, p: PlatformArrays) -> dict[str, np.ndarray]:
    bytes_t = (read_t + write_t) / 8
    with np.errstate(divide="ignore", invalid="ignore"):
        time_t = np.where(bytes_t > 0, bytes_t / (p.bw_Bps * p.bw_eff), 0.0)
    if np.any(np.isinf(time_t)):
        raise QMCError("data is placed in a tier with zero bandwidth; check the platform's placement")
    mem = np.where(p.combine_max, time_t.max(-1), time_t.sum(-1))
    dq_w, dq_o = dq[..., 0], dq[..., 1]
    dq_time = dq_w / p.dq_weights_s
    comp = flops / p.flops_s + dq_time  # dequantization runs on the compute side
    busy = np.where(p.overlap, np.maximum(mem, comp), mem + comp)
    latency = p.overhead_s + busy
    e_dyn_t = (read_t * p.read_pj + write_t * p.write_pj) * 1e-12
    e_comp = flops * p.pj_flop * 1e-12
    e_dq = (dq_w * p.dq_pj_weight + dq_o * p.dq_pj_outlier) * 1e-12
    e_static = static_W * latency
    energy = e_dyn_t.sum(-1) + e_comp + e_dq + e_static
    return {
        "bytes_read_tier": read_t / 8 / d_batch[..., None],
        "bytes_written_tier": write_t / 8 / d_batch[..., None],
        "time_tier_s": time_t,
        "memory_time_s": mem,
        "compute_time_s": comp,
        "latency_s": latency,
        "overhead_s": np.broadcast_to(p.overhead_s, np.shape(latency)),
        "energy_dynamic_tier_J": e_dyn_t / d_batch[..., None],
        "energy_compute_J": e_comp / d_batch,
        "energy_dequant_J": e_dq / d_batch,
        "dequant_time_s": np.broadcast_to(dq_time, np.shape(latency)),
        "energy_static_J": e_static / d_batch,
        "energy_J": energy / d_batch,
        "off_die_bytes": (bytes_t * p.off_die).sum(-1) / d_batch,
        "off_package_bytes": (bytes_t * p.off_package).sum(-1) / d_batch,
    }


def evaluate(d: Demand, p: PlatformArrays) -> dict[str, object]:
    """Evaluate any broadcastable set of design points. Decode figures are per generated token (a step
    divided by the batch) except ``latency_s``, which is per step; prefill figures are per prompt."""
    stored_t = to_tiers(d.stored, p.placement)
    wmask = np.isin(np.array(CLASSES), WEIGHT_CLASSES)
    weights_bits = (d.stored * wmask).sum(-1)
    cells_t = to_tiers(d.stored / d.area_div, p.placement)
    with np.errstate(invalid="ignore"):
        area_t = np.where(p.off_package, 0.0, np.nan_to_num(cells_t / 1e6 / p.density))
    static_t = static_power(stored_t, p)
    static = static_t.sum(-1)
    dec = _phase(
        to_tiers(d.dec_read, p.placement),
        to_tiers(d.dec_write, p.placement),
        d.dec_flops,
        d.dec_dq,
        d.batch,
        static,
        p,
    )
    pre = _phase(
        to_tiers(d.pre_read, p.placement),
        to_tiers(d.pre_write, p.placement),
        d.pre_flops,
        d.pre_dq,
        d.batch,
        static,
        p,
    )
    pre["latency_per_prompt_token_s"] = pre["latency_s"] / d.prompt
    return {
        "tiers": p.tiers,
        "footprint_tier_bytes": stored_t / 8,
        "footprint_weights_bytes": weights_bits / 8,
        "footprint_total_bytes": stored_t.sum(-1) / 8,
        "fits": np.all(stored_t <= p.capacity_bits * (1 + 1e-9), axis=-1),
        "area_tier_mm2": area_t,
        "area_die_mm2": (area_t * ~p.off_die).sum(-1),
        "area_package_mm2": (area_t * (p.off_die & ~p.off_package)).sum(-1),
        "static_W_tier": static_t,
        "static_W": static,
        "decode": dec,
        "prefill": pre,
    }
