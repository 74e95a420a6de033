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

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qmc_edge.deploy.arch import Arch
from qmc_edge.deploy.placement import CLASSES, WEIGHT_CLASSES, check_capacity, placement_matrix, tier_names
from qmc_edge.deploy.platform import Platform, load_platform, tier_bandwidth
from qmc_edge.errors import QMCError

FP16 = 16
C = len(CLASSES)
_IDX = {c: i for i, c in enumerate(CLASSES)}

#: The QMC paper's abstract (arXiv 2601.14549, via ../shared/reference/hardware.md): ratios vs FP16.
PAPER_HEADLINE = {
    "memory": "6.3-7.3x",
    "off_chip": "7.6x",
    "energy": "11.7x (10.98x in body summaries)",
    "latency": "12.5x",
    "area_mm2": "21.6",
}


# --------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Workload:
    prompt_len: int = 512
    gen_len: int = 128
    batch: int = 1
    kv_bits: int = 16
    prefill_chunk: int | None = None  # None = the whole prompt in one chunk

    def __post_init__(self) -> None:
        for k in ("prompt_len", "gen_len", "batch", "kv_bits"):
            if getattr(self, k) < 1:
                raise QMCError(f"workload {k} must be >= 1, got {getattr(self, k)}")
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise QMCError(f"workload prefill_chunk must be >= 1, got {self.prefill_chunk}")


@dataclass(frozen=True)
class MethodCost:
    """Bits per quantized weight by memory (reram/mram/dram), from a storage report."""

    name: str
    bits_per_weight: dict[str, float]
    components_per_weight: dict[str, float] = field(default_factory=dict)
    quantized_embeddings: bool = False
    cell_bits: int | None = None
    source: str = ""
    outlier_share: float = 0.0  # outliers per quantized weight (each costs a CSR gather to dequantize)

    @property
    def effective_bits(self) -> float:
        return sum(self.bits_per_weight.values())

    @property
    def quantized(self) -> bool:
        """Whether the weights are stored as codes that must be dequantized (False for FP16 weights)."""
        return self.effective_bits < FP16 - 1e-9

    @classmethod
    def fp16(cls) -> MethodCost:
        return cls("FP16", {"dram": 16.0}, {"weights_fp16": 16.0}, source="FP16 weights, no quantization")

    @classmethod
    def from_report(cls, name: str, report: dict, arch: Arch | None = None) -> MethodCost:
        """From :func:`qmc_edge.methods.whole_model.storage_report` (or the ``storage`` of a saved JSON)."""
        try:
            q = report["quantized_params"]
            mem = {k: v for k, v in report["bits_by_memory"].items() if k != "unquantized_fp16_dram"}
            comp = report["bits_by_component"]
        except (KeyError, TypeError) as exc:
            raise QMCError(
                f"storage report for {name!r} lacks {exc}; pass a report written by `qmc quantize`"
            ) from None
        if not q:
            raise QMCError(f"storage report for {name!r} has no quantized parameters")
        unknown = set(mem) - {"reram", "mram", "dram"}
        if unknown:
            raise QMCError(f"storage report for {name!r} names unknown memories {sorted(unknown)}")
        qe = bool(arch is not None and q > arch.linear_params)
        return cls(
            name,
            {k: v / q for k, v in mem.items()},
            {k: v / q for k, v in comp.items()},
            quantized_embeddings=qe,
            cell_bits=report.get("reram_bits_per_cell"),
            source="storage report",
            outlier_share=float(report.get("outliers") or 0) / q,
        )


@dataclass
class Demand:
    """What one (model, method, workload) asks of memory and compute; arrays of shape (..., C) / (...)."""

    stored: np.ndarray  # bits held per class
    dec_read: np.ndarray  # bits read per decode step (all sequences of the batch)
    dec_write: np.ndarray
    pre_read: np.ndarray  # bits read for the whole prefill
    pre_write: np.ndarray
    area_div: np.ndarray  # bits per physical cell of the class (ReRAM MLC), for the area
    dec_flops: np.ndarray  # per decode step
    pre_flops: np.ndarray
    dec_dq: np.ndarray  # (..., 2): quantized weights and outliers dequantized per decode step
    pre_dq: np.ndarray  # the same for the whole prefill
    batch: np.ndarray
    prompt: np.ndarray

    @staticmethod
    def stack(items: Sequence[Demand]) -> Demand:
        return Demand(**{k: np.stack([getattr(d, k) for d in items]) for k in Demand.__dataclass_fields__})


def demand(arch: Arch, cost: MethodCost, wl: Workload) -> Demand:
    """Bits per class for decode and prefill, and FLOPs (see the module docstring for the model)."""
    n_q = arch.linear_params + (arch.embed_params + arch.head_params if cost.quantized_embeddings else 0)
    stored = np.zeros(C)
    for mem, b in cost.bits_per_weight.items():
        stored[_IDX[mem]] = b * n_q
    # Quantized untied embeddings are stored with the codes but only one row of them is read a token.
    read_frac = 1.0
    if cost.quantized_embeddings and not arch.tied:
        read_frac = (n_q - arch.embed_params + arch.hidden) / n_q
    dec_read = stored * read_frac
    # Dequantization: every quantized weight read is unpacked once per step (shared by the batch).
    dq_w = n_q * read_frac if cost.quantized else 0.0
    dec_dq = np.array([dq_w, dq_w * cost.outlier_share])
    if not cost.quantized_embeddings:
        stored[_IDX["embeddings"]] = arch.embed_params * FP16
        stored[_IDX["head"]] = arch.head_params * FP16
        row = arch.hidden * FP16 * wl.batch
        dec_read[_IDX["embeddings"]] = row + (arch.embed_params * FP16 if arch.tied else 0)
        dec_read[_IDX["head"]] = arch.head_params * FP16
    stored[_IDX["fp16_other"]] = arch.other_params * FP16
    dec_read[_IDX["fp16_other"]] = arch.other_params * FP16

    kv_tok = arch.kv_bits_per_token(wl.kv_bits)
    ctx = wl.prompt_len + wl.gen_len
    avg_attended = wl.prompt_len + (wl.gen_len - 1) / 2
    stored[_IDX["kv_cache"]] = kv_tok * ctx * wl.batch
    dec_read[_IDX["kv_cache"]] = kv_tok * avg_attended * wl.batch
    dec_write = np.zeros(C)
    dec_write[_IDX["kv_cache"]] = kv_tok * wl.batch
    # Activations (approximate, tiny): each layer reads/writes ~4 hidden + 3 intermediate vectors, plus logits.
    act = (arch.layers * (4 * arch.hidden + 3 * arch.intermediate) + arch.vocab) * FP16 * wl.batch
    dec_read[_IDX["activations"]] = act
    dec_write[_IDX["activations"]] = act
    stored[_IDX["activations"]] = (2 * arch.hidden + 2 * arch.intermediate + 2 * arch.vocab) * FP16 * wl.batch

    # Prefill: weights once per chunk; embeddings one row per prompt token; head once (last token's logits).
    chunk = wl.prefill_chunk or wl.prompt_len
    n_chunks = math.ceil(wl.prompt_len / chunk)
    pre_read = np.zeros(C)
    for c in ("reram", "mram", "dram", "fp16_other", "head"):
        pre_read[_IDX[c]] = dec_read[_IDX[c]] * n_chunks
    if not cost.quantized_embeddings:
        rows = min(wl.prompt_len, arch.vocab) * arch.hidden * FP16 * wl.batch
        pre_read[_IDX["embeddings"]] = rows + (arch.embed_params * FP16 if arch.tied else 0)
    ends = np.minimum(np.arange(1, n_chunks + 1) * chunk, wl.prompt_len)
    pre_read[_IDX["kv_cache"]] = kv_tok * float(ends.sum()) * wl.batch
    pre_write = np.zeros(C)
    pre_write[_IDX["kv_cache"]] = kv_tok * wl.prompt_len * wl.batch
    pre_read[_IDX["activations"]] = act * wl.prompt_len
    pre_write[_IDX["activations"]] = act * wl.prompt_len

    area_div = np.ones(C)
    if cost.cell_bits:
        area_div[_IDX["reram"]] = cost.cell_bits
    attn = 4 * arch.layers * arch.heads * arch.head_dim  # QK^T and AV, per attended position
    mm = 2 * (arch.linear_params + arch.head_read_params)
    dec_flops = (mm + attn * (avg_attended + 1)) * wl.batch
    p = wl.prompt_len
    pre_flops = (2 * arch.linear_params * p + 2 * arch.head_read_params + attn * p * (p + 1) / 2) * wl.batch
    return Demand(
        stored,
        dec_read,
        dec_write,
        pre_read,
        pre_write,
        area_div,
        np.asarray(float(dec_flops)),
        np.asarray(float(pre_flops)),
        dec_dq,
        dec_dq * n_chunks,
        np.asarray(float(wl.batch)),
        np.asarray(float(wl.prompt_len)),
    )


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
def _to_tiers(bits_c: np.ndarray, placement: np.ndarray) -> np.ndarray:
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
    stored_t = _to_tiers(d.stored, p.placement)
    wmask = np.isin(np.array(CLASSES), WEIGHT_CLASSES)
    weights_bits = (d.stored * wmask).sum(-1)
    cells_t = _to_tiers(d.stored / d.area_div, p.placement)
    with np.errstate(invalid="ignore"):
        area_t = np.where(p.off_package, 0.0, np.nan_to_num(cells_t / 1e6 / p.density))
    static_t = static_power(stored_t, p)
    static = static_t.sum(-1)
    dec = _phase(
        _to_tiers(d.dec_read, p.placement),
        _to_tiers(d.dec_write, p.placement),
        d.dec_flops,
        d.dec_dq,
        d.batch,
        static,
        p,
    )
    pre = _phase(
        _to_tiers(d.pre_read, p.placement),
        _to_tiers(d.pre_write, p.placement),
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


# ------------------------------------------------------------------------------- high-level API
def resolve_platforms(platforms: Sequence[str | Platform]) -> list[Platform]:
    return [p if isinstance(p, Platform) else load_platform(p) for p in platforms]


def _scalar(x):
    a = np.asarray(x)
    if a.ndim == 0:
        return float(a)
    return a.tolist()


def _flatten(res: dict, i: int | tuple) -> dict:
    """One design point of an evaluate() result as plain Python (per-tier arrays become dicts)."""
    tiers = res["tiers"]
    out: dict = {}
    for k, v in res.items():
        if k == "tiers":
            continue
        if isinstance(v, dict):
            out[k] = _flatten({"tiers": tiers, **v}, i)
        elif k.endswith("_tier") or "_tier_" in k:
            a = np.asarray(v)
            a = a[i] if a.ndim >= 2 else a  # platform-only arrays have no design-point axis
            out[k] = {t: float(a[j]) for j, t in enumerate(tiers)}
        else:
            a = np.asarray(v)
            out[k] = _scalar(a[i] if a.ndim >= 1 else a)
    return out


def deploy_table(
    arch: Arch,
    costs: dict[str, MethodCost],
    platforms: Sequence[str | Platform],
    workload: Workload | None = None,
    check: bool = True,
) -> list[dict]:
    """Every method on every platform at the platforms' nominal figures: one dict per (method, platform)
    with footprint, per-token decode and per-prompt prefill figures. ``check`` raises on overflow."""
    wl = workload or Workload()
    plats = resolve_platforms(platforms)
    tiers = tier_names(plats)
    names = list(costs)
    dem = Demand.stack([demand(arch, costs[m], wl) for m in names])  # (M, C)
    rows = []
    for plat in plats:
        if check:
            for m in names:
                check_capacity(plat, dem.stored[names.index(m)], f"{arch.name} with {m}")
        pa = platform_arrays(plat, tiers)
        res = evaluate(dem, pa)
        for i, m in enumerate(names):
            r = _flatten(res, i)
            r.update(method=m, platform=plat.name, arch=arch.name, effective_bits=costs[m].effective_bits)
            r["decode"]["tokens_per_s"] = wl.batch / r["decode"]["latency_s"]
            r["load"] = load_cost(plat, tiers, dem.stored[i])
            rows.append(r)
    return rows


def load_cost(plat: Platform, tiers: list[str], stored_c: np.ndarray) -> dict | None:
    """One-time cost of copying the weights from the ``load_from`` tier (Flash) into their tiers at
    start-up: read at the source's bandwidth and pJ/bit, written at each destination's write pJ/bit.
    Non-volatile destinations (ReRAM, MRAM) keep the weights across power cycles, so for them this is
    paid once per deployment, not once per boot; volatile ones (LPDDR, SRAM) pay it at every boot."""
    src = plat.placement.load_from
    if src is None:
        return None
    wmask = np.isin(np.array(CLASSES), WEIGHT_CLASSES)
    per_tier = _to_tiers(stored_c * wmask, placement_matrix(plat, tiers))
    bits = float(per_tier.sum())
    s = plat.tiers[src]
    write = sum(per_tier[j] * plat.tiers[t].write_pj_per_bit.value for j, t in enumerate(tiers) if t in plat.tiers)
    volatile = sum(per_tier[j] for j, t in enumerate(tiers) if t in plat.tiers and not plat.tiers[t].non_volatile)
    return {
        "from": src,
        "bytes": bits / 8,
        "seconds": bits / 8 / (plat.tier_bandwidth_GBps(src) * 1e9),
        "energy_J": (bits * s.read_pj_per_bit.value + write) * 1e-12,
        "bytes_reloaded_every_boot": float(volatile) / 8,
    }


def sweep_levels(platforms: Sequence[Platform]) -> dict[str, list[tuple[float, float, float]]]:
    """Ranged figure paths over the platforms: path -> per-platform (lo, nominal, hi)."""
    paths: list[str] = []
    for p in platforms:
        for k in p.ranged():
            if k not in paths:
                paths.append(k)
    out = {}
    for k in paths:
        vals = []
        for p in platforms:
            f = p.figures().get(k)
            vals.append((f.range[0], f.value, f.range[1]) if f is not None and f.range else (np.nan,) * 3)
        out[k] = vals
    return out


def sensitivity(
    arch: Arch,
    costs: dict[str, MethodCost],
    platforms: Sequence[str | Platform],
    baseline: tuple[str, str],
    workload: Workload | None = None,
) -> dict:
    """Band of every ratio vs the baseline (method, platform) over all corners of the ranged figures.

    A figure path present in several platforms (``tiers.lpddr5.read_pj_per_bit``) is one physical
    quantity and moves jointly: at each corner every platform takes its own low or high end. The ratio
    of two affine functions of one figure is monotone in it, so corners bound the band.
    Returns {method: {platform: {metric: (min, nominal, max)}}} and the paths swept."""
    wl = workload or Workload()
    plats = resolve_platforms(platforms)
    tiers = tier_names(plats)
    levels = sweep_levels(plats)
    paths = list(levels)
    corners = np.array(list(itertools.product((0, 2), repeat=len(paths))) or [()], dtype=int).reshape(-1, len(paths))
    grid = np.vstack([np.ones((1, len(paths)), int), corners])  # row 0 = nominal
    names = list(costs)
    if baseline[0] not in names:
        raise QMCError(f"baseline method {baseline[0]!r} is not among the methods {names}")
    dem = Demand.stack([demand(arch, costs[m], wl) for m in names])
    res = {}
    for pi, plat in enumerate(plats):
        over = {}
        for k, path in enumerate(paths):
            lo_nom_hi = levels[path][pi]
            if not np.isnan(lo_nom_hi[0]):
                over[path] = np.asarray(lo_nom_hi)[grid[:, k]]
        pa = platform_arrays(
            plat, tiers, over or {"compute.efficiency": np.full(len(grid), plat.compute.efficiency.value)}
        )
        # Broadcast (M, 1, C) demand against (G, ...) platform variants -> (M, G).
        d = Demand(**{k: np.expand_dims(getattr(dem, k), 1) for k in Demand.__dataclass_fields__})
        res[plat.name] = evaluate(d, pa)
    bp = baseline[1]
    if bp not in res:
        raise QMCError(f"baseline platform {bp!r} is not among the platforms {list(res)}")
    bi = names.index(baseline[0])
    metrics = ratio_metrics()
    out: dict = {}
    for m_i, m in enumerate(names):
        out[m] = {}
        for pname, r in res.items():
            out[m][pname] = {}
            for metric, get in metrics.items():
                ratio = get(res[bp])[bi] / get(r)[m_i]
                out[m][pname][metric] = (float(ratio.min()), float(ratio[0]), float(ratio.max()))
    return {"paths": paths, "levels": {k: v for k, v in levels.items()}, "corners": len(grid) - 1, "bands": out}


def ratio_metrics():
    return {
        "memory": lambda r: r["footprint_weights_bytes"],
        "off_die": lambda r: r["decode"]["off_die_bytes"],
        "off_package": lambda r: r["decode"]["off_package_bytes"],
        "energy": lambda r: r["decode"]["energy_J"],
        "latency": lambda r: r["decode"]["latency_s"],
    }


def headline_rows(*args, **kwargs) -> list[dict]:
    """The rows of :func:`headline` (same arguments)."""
    return headline(*args, **kwargs)["rows"]


def headline(
    arch: Arch | str,
    reports: dict[str, dict | MethodCost],
    platforms: Sequence[str | Platform] = ("orin_agx", "qmc_hetero"),
    workload: Workload | None = None,
    baseline: tuple[str, str] = ("FP16", "orin_agx"),
    bands: bool = True,
) -> dict:
    """The paper-style headline: per (method, platform), ratios vs FP16 on the conventional platform.

    Returns ``rows`` (below), the full ``table`` of :func:`deploy_table` and the ``sensitivity`` (None
    without ``bands``), each computed once, so callers that show all three need not recompute them.

    ``arch``: an :class:`Arch` or a name/config accepted by :func:`~qmc_edge.deploy.arch.resolve_arch`.
    ``reports``: method label -> storage report (``storage_report(...)`` dict, or the ``storage`` of a
    ``qmc quantize --json`` file) or a ready :class:`MethodCost`. An ``FP16`` row is added when absent.
    Each row: method, platform, absolute figures (weights MB, off-die/off-package MB per token, mJ and
    ms per token, tok/s, on-die area) and ``ratio_<metric>`` = (min, nominal, max) over the
    sensitivity corners (min = max = nominal when ``bands`` is False)."""
    from qmc_edge.deploy.arch import resolve_arch

    a = resolve_arch(arch) if isinstance(arch, str) else arch
    costs: dict[str, MethodCost] = {}
    for name, rep in reports.items():
        costs[name] = rep if isinstance(rep, MethodCost) else MethodCost.from_report(name, rep, a)
    if baseline[0] not in costs:
        costs = {baseline[0]: MethodCost.fp16(), **costs}
    plats = resolve_platforms(platforms)
    if baseline[1] not in [p.name for p in plats]:
        plats = [load_platform(baseline[1]), *plats]
    table = deploy_table(a, costs, plats, workload)
    sens = sensitivity(a, costs, plats, baseline, workload) if bands else None
    base = next(r for r in table if r["method"] == baseline[0] and r["platform"] == baseline[1])
    rows = []
    for r in table:
        row = {
            "arch": a.name,
            "method": r["method"],
            "platform": r["platform"],
            "effective_bits": r["effective_bits"],
            "weights_MB": r["footprint_weights_bytes"] / 1e6,
            "off_die_MB_per_token": r["decode"]["off_die_bytes"] / 1e6,
            "off_package_MB_per_token": r["decode"]["off_package_bytes"] / 1e6,
            "energy_mJ_per_token": r["decode"]["energy_J"] * 1e3,
            "latency_ms_per_token": r["decode"]["latency_s"] * 1e3,
            "tokens_per_s": r["decode"]["tokens_per_s"],
            "area_die_mm2": r["area_die_mm2"],
            "area_package_mm2": r["area_package_mm2"],
        }
        for metric, get in ratio_metrics().items():
            nominal = get_scalar(get, base) / get_scalar(get, r)
            if sens is not None:
                row[f"ratio_{metric}"] = sens["bands"][r["method"]][r["platform"]][metric]
            else:
                row[f"ratio_{metric}"] = (nominal, nominal, nominal)
        rows.append(row)
    return {"rows": rows, "table": table, "sensitivity": sens, "arch": a, "costs": costs, "platforms": plats}


def get_scalar(get, flat_row: dict) -> float:
    v = get(flat_row)
    return float(v) if np.ndim(v) == 0 else float(np.asarray(v).ravel()[0])
