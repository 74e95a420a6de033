"""Mixed precision under a whole-model bit budget: per tensor, QMC's inlier bits, bits per cell and
outlier share (or FP16), chosen to minimise the sensitivity-weighted expected error.

The budget is bits per parameter over *every* parameter of the model, embeddings, head and norms
included, counted exactly as the storage report counts them (tied weights once, unquantized
parameters at FP16), so ``qmc:budget=2.5`` gives a model whose report says at most 2.5 whole-model
bits per parameter.

For each tensor and each option of :data:`CHOICES` x :data:`RHOS` (and FP16), the tensor is quantized
with that option and two numbers kept: its storage bits (``QuantizedTensor.storage()``) and its
cost, ``sum_i F_i E[d_i**2]``: the expected squared error of every weight after one read (the
deterministic error plus the device's read error, analytic as in the clip search, through the
tensor's code-to-level map) weighted by the weight's sensitivity ``F`` (:mod:`qmc_edge.quant.sensitivity`;
1 for ``sensitivity=uniform``). Choosing one option per tensor to minimise the total cost under the
bit limit is a multiple-choice knapsack; it is solved by Lagrangian relaxation (bisection on the
price of a bit, each tensor then picks its cheapest option alone) followed by a greedy pass that
spends what the relaxation left on the upgrades of best cost saved per bit that still fit. The
result never exceeds the limit. Then the chosen option of each tensor is quantized again (the same
codes as in the search: quantization is deterministic), so memory holds one option at a time.

Written here: the allocation is specific to QMC's option space and storage accounting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from qmc_edge.errors import QMCError
from qmc_edge.memory.cells import code_transition_matrix
from qmc_edge.memory.models import CellModel
from qmc_edge.parallel import map_tensors
from qmc_edge.quant import level_map as lm
from qmc_edge.quant.qtensor import OutlierTable, QuantizedTensor
from qmc_edge.quant.sensitivity import sensitivity_for
from qmc_edge.quant.uniform import UniformCodes

# (inlier bits, bits per cell). 3-bit codes in 2-bit cells are left out: they take the 4 bits of
# capacity that 4-bit codes take, with the same (near error-free) cells and a coarser grid.
CHOICES: tuple[tuple[int, int], ...] = ((2, 2), (3, 3), (4, 2))
RHOS: tuple[float, ...] = (0.0, 0.01, 0.02)  # outlier shares
FP16 = None  # the option of keeping a tensor unquantized (16 bits per weight, no error)


@dataclass(frozen=True)
class Option:
    """One QMC configuration a tensor may take."""

    bits: int
    cell_bits: int
    rho: float

    def label(self) -> str:
        return f"{self.bits}b@{self.cell_bits}b/cell rho={self.rho:g}"


OPTIONS: tuple[Option, ...] = tuple(Option(b, c, r) for b, c in CHOICES for r in RHOS)


@dataclass
class Candidate:
    option: Option | None  # None: FP16
    bits: int
    cost: float


def unique_params(model: torch.nn.Module) -> int:
    """Parameters of the model, tied ones once (as the storage report counts them)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen.setdefault(id(p), p.numel())
    return sum(seen.values())


def skeleton_bits(shape: tuple[int, int], spec, opt: Option) -> int:
    """Storage bits of a tensor of ``shape`` under ``opt`` without quantizing it: the same layout
    (codes, scales, zero points, outlier table, ECC, a code-to-level table when the spec asks for
    one), from a tensor of zeros. An upper bound of the real count (the table may turn out absent)."""
    out_f, in_f = shape
    g = spec.group_size if spec.group_size and spec.group_size < in_f else in_f
    ng = -(-in_f // g)
    inl = UniformCodes(
        codes=torch.zeros(shape, dtype=torch.uint8),
        scale=torch.ones(out_f, ng),
        zero=torch.zeros(out_f, ng),
        bits=opt.bits,
        group_size=g,
    )
    k = round(opt.rho * out_f * in_f)
    ot = OutlierTable(
        index=torch.arange(k, dtype=torch.int64),
        codes=torch.zeros(k, dtype=torch.int16),
        scale=1.0,
        bits=spec.outlier_bits,
        offset=0.0 if spec.outlier_code == "offset" else None,
    )
    lmap = torch.arange(2**opt.bits, dtype=torch.uint8) if spec.level_map else None
    qt = QuantizedTensor(
        shape=shape,
        inliers=inl,
        code_memory="reram",
        cell_bits=opt.cell_bits,
        meta_memory="mram",
        outliers=ot,
        mram_ecc=spec.mram_ecc,
        cell_layout=spec.layout,
        level_map=lmap,
    )
    return qt.storage().total


def expected_sq_error(w: torch.Tensor, qt: QuantizedTensor, cell_model: CellModel) -> torch.Tensor:
    """Per weight, the expected squared error of one read of ``qt`` from ``cell_model`` (analytic)."""
    w = w.detach().float()
    e = qt.dequantize() - w
    out = e * e
    if cell_model.is_ideal or qt.code_memory != "reram":
        return out
    inl = qt.inliers
    p = code_transition_matrix(inl.bits, cell_model, qt.cell_layout, None)
    perm = None if qt.level_map is None else qt.level_map.numpy().astype(np.int64)
    m1, m2 = lm.moments(p, perm)
    idx = torch.arange(qt.shape[1]) // inl.group_size
    s = inl.scale[:, idx]
    q = inl.codes.long()
    noise = 2 * e * s * m1[q] + s * s * m2[q]
    if qt.outliers is not None and qt.outliers.count:
        noise.view(-1)[qt.outliers.index] = 0.0  # an outlier's value is read from MRAM, not the cells
    return out + noise


def allocate(cands: dict[str, list[Candidate]], limit: int) -> dict[str, int]:
    """Index of the chosen candidate per tensor: least total cost with total bits <= ``limit``
    (Lagrangian relaxation, then a greedy fill; see the module docstring)."""
    names = list(cands)
    bits = {n: np.array([c.bits for c in cands[n]], dtype=np.float64) for n in names}
    cost = {n: np.array([c.cost for c in cands[n]], dtype=np.float64) for n in names}
    if sum(bits[n].min() for n in names) > limit:
        raise QMCError("the bit budget is below the smallest option of every tensor")

    def pick(lam: float) -> dict[str, int]:
        return {n: int(np.argmin(cost[n] + lam * bits[n])) for n in names}

    def total(ch: dict[str, int]) -> float:
        return sum(bits[n][ch[n]] for n in names)

    choice = pick(0.0)
    if total(choice) > limit:
        hi = 1.0
        for _ in range(2000):  # a price high enough that every tensor takes its smallest options
            if total(pick(hi)) <= limit:
                break
            hi *= 4
        choice, lo = pick(hi), 0.0
        for _ in range(100):
            mid = (lo + hi) / 2
            ch = pick(mid)
            if total(ch) <= limit:
                hi, choice = mid, ch
            else:
                lo = mid
    # Greedy fill: the upgrade of most cost saved per extra bit that still fits, until none does.
    used = total(choice)
    while True:
        best = None
        for n in names:
            cur = choice[n]
            for j in range(len(cands[n])):
                db = bits[n][j] - bits[n][cur]
                dc = cost[n][cur] - cost[n][j]
                if dc <= 0 or used + db > limit:
                    continue
                gain = dc / db if db > 0 else math.inf
                if best is None or gain > best[0]:
                    best = (gain, n, j, db)
        if best is None:
            return choice
        _, n, j, db = best
        choice[n] = j
        used += db


@dataclass
class BudgetChoice:
    """What the allocation chose: per tensor its option (None: FP16), the sensitivity it weighed the
    errors with (empty for ``sensitivity=uniform``), and the report's ``budget`` entry so far."""

    options: dict[str, Option | None]
    sensitivity: dict[str, torch.Tensor]
    info: dict
    fixed_bits: int  # the parameters never quantized, at FP16
    total: int  # parameters of the model, tied ones once


def choose_budget(spec, model: torch.nn.Module, names: list[str], tokenizer, progress) -> BudgetChoice:
    """Per-tensor options for ``spec.budget`` (see the module docstring); ``progress`` counts the
    search's jobs and then as many steps again as there are tensors, for the final quantization."""
    params = dict(model.named_parameters(remove_duplicate=False))
    total = unique_params(model)
    limit = math.floor(spec.budget * total)
    fixed = 16 * (total - sum(params[n].numel() for n in names))  # parameters never quantized
    shapes = {n: tuple(params[n].shape) for n in names}
    floor_bits = fixed + sum(
        min([16 * math.prod(shapes[n])] + [skeleton_bits(shapes[n], spec, o) for o in OPTIONS]) for n in names
    )
    if floor_bits > limit:
        raise QMCError(
            f"budget={spec.budget:g} bits per parameter is below what QMC's options reach on this model "
            f"({floor_bits / total:.3f} with every tensor at its smallest option); raise the budget"
        )
    t0 = time.perf_counter()
    sens = sensitivity_for(spec, model, names, tokenizer)
    specs = {o: spec.for_option(o) for o in OPTIONS}
    jobs = sorted(((n, o) for n in names for o in OPTIONS), key=lambda j: -params[j[0]].numel())
    steps = len(jobs) + len(names)

    def search(job: tuple[str, Option]) -> Candidate:
        name, o = job
        w = params[name].detach().cpu()
        s = specs[o]
        qt = s.quantize_tensor(w, sens.get(name))
        err = expected_sq_error(w, qt, s.cells(for_search=True))
        f = sens.get(name)
        return Candidate(o, qt.storage().total, float((err if f is None else err * f).double().sum()))

    # One job per (tensor, option), largest tensors first: the embedding alone is a fifth of a small
    # model, and its options then spread over the workers instead of queueing on one.
    done = (lambda i: progress(i + 1, steps)) if progress else None
    found = dict(zip(jobs, map_tensors(search, jobs, done), strict=True))
    cands = {n: [Candidate(FP16, 16 * params[n].numel(), 0.0)] + [found[(n, o)] for o in OPTIONS] for n in names}
    choice = allocate(cands, limit - fixed)
    chosen = {n: cands[n][choice[n]].option for n in names}
    info = {
        "bits_per_parameter": spec.budget,
        "sensitivity": spec.sensitivity,
        "options": [o.label() for o in OPTIONS] + ["fp16"],
        "configs": {n: ("fp16" if o is None else o.label()) for n, o in chosen.items()},
        "search_seconds": time.perf_counter() - t0,
    }
    return BudgetChoice(chosen, sens, info, fixed, total)


def budget_info(choice: BudgetChoice, model: torch.nn.Module, tensors: dict[str, QuantizedTensor]) -> dict:
    """The report's ``budget`` entry, with the whole-model bits per parameter the tensors reach."""
    params = dict(model.named_parameters(remove_duplicate=False))
    used = (
        choice.fixed_bits
        + sum(qt.storage().total for qt in tensors.values())
        + sum(16 * params[n].numel() for n, o in choice.options.items() if o is None)
    )
    return {"budget": {**choice.info, "reached": used / choice.total}}
