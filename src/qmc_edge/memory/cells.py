"""Mapping of b-bit integer codes onto c-bit multi-level cells, and what cell read errors do to codes.

A b-bit code takes ceil(b / c) cells. The most significant bits go in the first cell, so a one-level
error there moves the code by 2**(b - c) steps while one in the last cell moves it by one step:
that asymmetry is why the noise-aware quantizer needs the code-level error statistics computed
here rather than a single per-cell error rate.

When c does not divide b, the last cell holds r = b - (ceil(b/c) - 1) * c bits. Two layouts
(``layout=``):

* ``"left"`` (default, the original behaviour): the r bits are stored left-aligned (value << (c - r)),
  i.e. at the low edge of each 2**(c - r)-level bucket, and a read is shifted back (>> (c - r)), so
  the full-cell thresholds decide and a one-level slip that stays within the same bucket costs
  nothing.
* ``"spread"``: the 2**r values use 2**r levels spread over the whole range (e.g. levels 0 and 7 for
  r = 1 in 3-bit cells). With a device, the set is the one that minimises the exact code-error rate
  for that device's transition matrix (:func:`spread_levels`); without one, the evenly spread set
  (0, 2, 5, 7 for r = 2 in 3-bit cells). A read level is decoded to the used level most likely to
  have produced it (maximum likelihood among the used levels; ties go to the nearest level). Encode
  and decode must be given the same layout and device.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

from qmc_edge.memory.models import CellModel

Layout = Literal["left", "spread"]
LAYOUTS = ("left", "spread")


def cells_per_code(bits: int, cell_bits: int) -> int:
    return math.ceil(bits / cell_bits)


def _cell_layout(bits: int, cell_bits: int) -> list[tuple[int, int]]:
    """(shift of the cell's bits within the code, number of code bits in the cell), MSB cell first."""
    k = cells_per_code(bits, cell_bits)
    layout = []
    remaining = bits
    for _ in range(k):
        width = min(cell_bits, remaining)
        remaining -= width
        layout.append((remaining, width))
    return layout


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def _even_levels(width: int, cell_bits: int) -> tuple[int, ...]:
    top = 2**cell_bits - 1
    n = 2**width
    return tuple(int(math.floor(i * top / (n - 1) + 0.5)) for i in range(n)) if n > 1 else (0,)


def _ml_decode(t: np.ndarray, used: tuple[int, ...]) -> np.ndarray:
    """For every read level j, the value v whose used level u_v most likely produced it (ties: the
    nearest level, then the lower value)."""
    levels = t.shape[0]
    dec = np.empty(levels, dtype=np.int64)
    for j in range(levels):
        dec[j] = max(range(len(used)), key=lambda v: (t[used[v], j], -abs(used[v] - j), -v))
    return dec


def _partial_error(t: np.ndarray, used: tuple[int, ...], dec: np.ndarray) -> float:
    """Mean over the stored values of the probability that the value is read wrong."""
    return float(np.mean([1.0 - t[u, dec == v].sum() for v, u in enumerate(used)]))


@lru_cache(maxsize=256)
def _best_spread(width: int, cell_bits: int, matrix_bytes: bytes) -> tuple[int, ...]:
    levels = 2**cell_bits
    t = np.frombuffer(matrix_bytes, dtype=np.float64).reshape(levels, levels)
    even = _even_levels(width, cell_bits)
    scored = []
    for used in itertools.combinations(range(levels), 2**width):
        err = _partial_error(t, used, _ml_decode(t, used))
        gap = min(b - a for a, b in itertools.pairwise(used)) if len(used) > 1 else levels
        dist = sum(abs(a - b) for a, b in zip(used, even, strict=True))
        scored.append((err, -gap, dist, used))
    best = min(s[0] for s in scored)
    # Sets whose error equals the best (to rounding) are ties: prefer the widest spacing, then the
    # set nearest the even spread, so that a near-ideal device keeps the even, robust layout.
    ties = [s for s in scored if s[0] <= best + max(best * 1e-9, 1e-300)]
    return min(ties, key=lambda s: s[1:3])[3]


def spread_levels(width: int, cell_bits: int, cell_model: CellModel | None = None) -> tuple[int, ...]:
    """The levels that a partial cell of ``width`` code bits uses in ``cell_bits``-bit cells under the
    spread layout, value 0 first (increasing). With a (noisy) device: the set of ``2**width`` levels
    that minimises the exact error rate of that cell under maximum-likelihood decoding, computed from
    its transition matrix; without one (or for an ideal device): the evenly spread set."""
    if width >= cell_bits:
        return tuple(range(2**cell_bits))
    if cell_model is None or cell_model.is_ideal:
        return _even_levels(width, cell_bits)
    if cell_model.bits_per_cell != cell_bits:
        raise ValueError(f"the cell model has {cell_model.bits_per_cell} bits per cell, the layout {cell_bits}")
    t = np.ascontiguousarray(cell_model.transition_matrix(), dtype=np.float64)
    return _best_spread(width, cell_bits, t.tobytes())


def _spread_decoder(width: int, cell_bits: int, cell_model: CellModel | None) -> np.ndarray:
    """Read level -> value for a spread partial cell."""
    used = spread_levels(width, cell_bits, cell_model)
    levels = 2**cell_bits
    t = np.eye(levels) if cell_model is None or cell_model.is_ideal else cell_model.transition_matrix()
    return _ml_decode(t, used)


def codes_to_cells(
    codes: torch.Tensor, bits: int, cell_bits: int, layout: Layout = "left", cell_model: CellModel | None = None
) -> torch.Tensor:
    """Integer codes of shape S -> cell levels of shape S + (cells_per_code,), MSB cell first.

    ``layout`` places a partial last cell (see the module docstring); ``cell_model`` chooses the spread
    levels (ignored for ``"left"``)."""
    _check_layout(layout)
    c = codes.to(torch.int64)
    cells = []
    for shift, width in _cell_layout(bits, cell_bits):
        value = (c >> shift) & ((1 << width) - 1)
        if width == cell_bits or layout == "left":
            cells.append(value << (cell_bits - width))
        else:
            used = torch.tensor(spread_levels(width, cell_bits, cell_model), dtype=torch.int64)
            cells.append(used[value])
    return torch.stack(cells, dim=-1).to(torch.uint8)


def cells_to_codes(
    cells: torch.Tensor, bits: int, cell_bits: int, layout: Layout = "left", cell_model: CellModel | None = None
) -> torch.Tensor:
    """Inverse of :func:`codes_to_cells` (also decodes noisy levels, as a real read would); give it the
    same ``layout`` and ``cell_model`` as the encoding."""
    _check_layout(layout)
    cells = cells.to(torch.int64)
    out = torch.zeros(cells.shape[:-1], dtype=torch.int64)
    for i, (shift, width) in enumerate(_cell_layout(bits, cell_bits)):
        if width == cell_bits or layout == "left":
            out |= (cells[..., i] >> (cell_bits - width)) << shift
        else:
            dec = torch.from_numpy(_spread_decoder(width, cell_bits, cell_model))
            out |= dec[cells[..., i].clamp(0, 2**cell_bits - 1)] << shift
    return out


_SAME = "same"  # layout_device default: the device that is read also chooses the spread levels


def code_transition_matrix(
    bits: int, cell_model: CellModel, layout: Layout = "left", layout_cell_model: CellModel | None | str = _SAME
) -> np.ndarray:
    """(2**b, 2**b) probabilities that a stored code reads back as another code.

    Cells are read independently, so the code-level matrix is the product over cells of the
    per-cell probabilities, after the placement (``layout``) and decoding of a partial last cell.
    """
    _check_layout(layout)
    c = cell_model.bits_per_cell
    t = cell_model.transition_matrix()
    codes = torch.arange(2**bits)
    chooser = cell_model if layout_cell_model == _SAME else layout_cell_model  # who chose the spread levels
    cells = codes_to_cells(codes, bits, c, layout, chooser).numpy().astype(np.int64)  # (n, k)
    n = 2**bits
    p = np.ones((n, n))
    for i, (shift, width) in enumerate(_cell_layout(bits, c)):
        # Probability that the cell's stored level decodes to each r-bit value.
        per_value = np.zeros((2**c, 2**width))
        if width == c or layout == "left":
            for level in range(2**c):
                per_value[:, level >> (c - width)] += t[:, level]
        else:
            dec = _spread_decoder(width, c, chooser)
            for level in range(2**c):
                per_value[:, dec[level]] += t[:, level]
        stored = cells[:, i]
        read_value = (np.arange(n) >> shift) & ((1 << width) - 1)
        p *= per_value[stored][:, read_value]
    return p


def code_error_moments(
    bits: int, cell_model: CellModel, layout: Layout = "left", layout_cell_model: CellModel | None | str = _SAME
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second moments of the code error (read - stored) for every stored code.

    With these, the expected squared error of a weight quantized to code q with step s and
    deterministic error e is e**2 + 2*e*s*m1[q] + s**2*m2[q], with no sampling.
    """
    p = code_transition_matrix(bits, cell_model, layout, layout_cell_model)
    diff = np.arange(2**bits)[None, :] - np.arange(2**bits)[:, None]
    m1 = (p * diff).sum(axis=1)
    m2 = (p * diff**2).sum(axis=1)
    return torch.from_numpy(m1).float(), torch.from_numpy(m2).float()


def read_codes(
    codes: torch.Tensor,
    bits: int,
    cell_model: CellModel,
    generator: torch.Generator,
    layout: Layout = "left",
    layout_cell_model: CellModel | None | str = _SAME,
    read_generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One noisy read of codes stored in ``cell_model``: codes -> cell levels -> device read -> codes.
    ``generator`` draws the chip, ``read_generator`` this read's noise (see ``CellModel.read``)."""
    _check_layout(layout)
    if cell_model.is_ideal:
        return codes.clone()
    chooser = cell_model if layout_cell_model == _SAME else layout_cell_model
    cells = codes_to_cells(codes, bits, cell_model.bits_per_cell, layout, chooser)
    if read_generator is not None and cell_model.rereads:
        noisy = cell_model.read(cells, generator, read_generator)
    else:  # a device model written before read noise existed takes (levels, generator)
        noisy = cell_model.read(cells, generator)
    return cells_to_codes(noisy, bits, cell_model.bits_per_cell, layout, chooser).to(codes.dtype)
