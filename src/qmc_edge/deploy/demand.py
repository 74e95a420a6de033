"""What a method on a model and a workload asks of memory and compute: the inputs of the cost model
(:class:`Workload`, :class:`MethodCost` from a storage report) and :func:`demand`, the bits read and
written and the FLOPs per data class (weights by kind, KV cache, activations), per decode step and
for prefill. The platform side and the evaluation are :mod:`qmc_edge.deploy.system`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from qmc_edge.deploy.arch import Arch
from qmc_edge.deploy.placement import CLASSES
from qmc_edge.errors import QMCError

FP16 = 16

C = len(CLASSES)

_IDX = {c: i for i, c in enumerate(CLASSES)}


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
