"""Mapping of b-bit integer codes onto c-bit multi-level cells, and what cell read errors do to codes.

A b-bit code takes ceil(b / c) cells. The most significant bits go in the first cell, so a one-level
error there moves the code by 2**(b - c) steps while one in the last cell moves it by one step:
that asymmetry is why the noise-aware quantizer needs the code-level error statistics computed
here rather than a single per-cell error rate.

When c does not divide b, the last cell holds r = b - (ceil(b/c) - 1) * c bits, stored left-aligned
(value << (c - r)) so they use widely spaced levels; a read is shifted back (>> (c - r)), so a
one-level slip that stays within the same r-bit bucket costs nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .devices import DeviceModel


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


def codes_to_cells(codes: torch.Tensor, bits: int, cell_bits: int) -> torch.Tensor:
    """Integer codes of shape S -> cell levels of shape S + (cells_per_code,), MSB cell first."""
    c = codes.to(torch.int64)
    cells = [
        ((c >> shift) & ((1 << width) - 1)) << (cell_bits - width) for shift, width in _cell_layout(bits, cell_bits)
    ]
    return torch.stack(cells, dim=-1).to(torch.uint8)


def cells_to_codes(cells: torch.Tensor, bits: int, cell_bits: int) -> torch.Tensor:
    """Inverse of :func:`codes_to_cells` (also decodes noisy levels, as a real read would)."""
    cells = cells.to(torch.int64)
    out = torch.zeros(cells.shape[:-1], dtype=torch.int64)
    for i, (shift, width) in enumerate(_cell_layout(bits, cell_bits)):
        out |= (cells[..., i] >> (cell_bits - width)) << shift
    return out


def code_transition_matrix(bits: int, device: DeviceModel) -> np.ndarray:
    """(2**b, 2**b) probabilities that a stored code reads back as another code.

    Cells are read independently, so the code-level matrix is the product over cells of the
    per-cell probabilities, after the left-alignment of a partial last cell.
    """
    c = device.bits_per_cell
    t = device.transition_matrix()
    codes = torch.arange(2**bits)
    cells = codes_to_cells(codes, bits, c).numpy().astype(np.int64)  # (n, k)
    n = 2**bits
    p = np.ones((n, n))
    for i, (_, width) in enumerate(_cell_layout(bits, c)):
        # Probability that the cell's stored level decodes to each r-bit value after the shift.
        per_value = np.zeros((2**c, 2**width))
        for level in range(2**c):
            per_value[:, level >> (c - width)] += t[:, level]
        stored = cells[:, i]
        read_value = cells[:, i] >> (c - width)
        p *= per_value[stored][:, read_value]
    return p


def code_error_moments(bits: int, device: DeviceModel) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second moments of the code error (read - stored) for every stored code.

    With these, the expected squared error of a weight quantized to code q with step s and
    deterministic error e is e**2 + 2*e*s*m1[q] + s**2*m2[q], with no sampling.
    """
    p = code_transition_matrix(bits, device)
    diff = np.arange(2**bits)[None, :] - np.arange(2**bits)[:, None]
    m1 = (p * diff).sum(axis=1)
    m2 = (p * diff**2).sum(axis=1)
    return torch.from_numpy(m1).float(), torch.from_numpy(m2).float()


def read_codes(codes: torch.Tensor, bits: int, device: DeviceModel, generator: torch.Generator) -> torch.Tensor:
    """One noisy read of codes stored in ``device``: codes -> cell levels -> device read -> codes."""
    if device.is_ideal:
        return codes.clone()
    cells = codes_to_cells(codes, bits, device.bits_per_cell)
    noisy = device.read(cells, generator)
    return cells_to_codes(noisy, bits, device.bits_per_cell).to(codes.dtype)
