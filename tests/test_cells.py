"""Code <-> cell mapping, code-level error statistics, and the analytic expected error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qmc_edge.memory.cells import (
    cells_per_code,
    cells_to_codes,
    code_error_moments,
    code_transition_matrix,
    codes_to_cells,
    read_codes,
)
from qmc_edge.memory.models import GaussianLevelReRAM, IdealCells, reram
from qmc_edge.quant.uniform import clip_grid, quantize_uniform


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


BITS_CELLS = [(b, c) for b in range(1, 5) for c in range(1, 4)]


@given(
    bits=st.integers(1, 4),
    cell_bits=st.integers(1, 3),
    data=st.data(),
)
def test_codes_cells_round_trip(bits, cell_bits, data):
    values = data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=1, max_size=64))
    codes = torch.tensor(values, dtype=torch.uint8)
    cells = codes_to_cells(codes, bits, cell_bits)
    assert cells.shape == (len(values), math.ceil(bits / cell_bits))
    assert cells.dtype == torch.uint8
    assert int(cells.max()) < 2**cell_bits
    back = cells_to_codes(cells, bits, cell_bits)
    assert torch.equal(back, codes.to(torch.int64))


@pytest.mark.parametrize("bits,cell_bits", BITS_CELLS)
def test_cells_per_code(bits, cell_bits):
    assert cells_per_code(bits, cell_bits) == math.ceil(bits / cell_bits)
    assert codes_to_cells(torch.zeros(2, 3, dtype=torch.uint8), bits, cell_bits).shape == (
        2,
        3,
        math.ceil(bits / cell_bits),
    )


def test_msb_goes_in_first_cell():
    assert codes_to_cells(torch.tensor([0b110]), 3, 1).tolist() == [[1, 1, 0]]
    assert codes_to_cells(torch.tensor([0b1101]), 4, 2).tolist() == [[0b11, 0b01]]
    assert codes_to_cells(torch.tensor([0b101101]), 6, 3).tolist() == [[0b101, 0b101]]
    # A partial last cell is left-aligned: 3 bits in 2-bit cells -> [b2 b1], [b0 0].
    assert codes_to_cells(torch.tensor([0b101]), 3, 2).tolist() == [[0b10, 0b10]]
    assert codes_to_cells(torch.tensor([0b011]), 3, 2).tolist() == [[0b01, 0b10]]
    # Fewer code bits than cell bits: one left-aligned cell.
    assert codes_to_cells(torch.tensor([1]), 1, 3).tolist() == [[0b100]]


def test_partial_cell_decodes_noisy_levels_by_shifting():
    # Last cell holds one code bit at level 0 or 2; reads of 1 and 3 decode to 0 and 1.
    cells = torch.tensor([[0, 1], [0, 3], [3, 2]])
    assert cells_to_codes(cells, 3, 2).tolist() == [0b000, 0b001, 0b111]


@pytest.mark.parametrize("bits,cell_bits", BITS_CELLS)
def test_code_transition_matrix_is_row_stochastic(bits, cell_bits):
    p = code_transition_matrix(bits, reram(cell_bits))
    assert p.shape == (2**bits, 2**bits)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_code_matrix_equals_device_matrix_when_one_cell_per_code(bits):
    d = reram(bits)
    np.testing.assert_allclose(code_transition_matrix(bits, d), d.transition_matrix(), rtol=1e-12, atol=0)


def test_ideal_device_gives_identity_code_matrix_and_zero_moments():
    d = IdealCells(bits_per_cell=2)
    np.testing.assert_array_equal(code_transition_matrix(4, d), np.eye(16))
    m1, m2 = code_error_moments(4, d)
    assert torch.count_nonzero(m1) == 0 and torch.count_nonzero(m2) == 0


# A visibly noisy 2-bit cell (about 2% neighbour errors) so that every slip has a usable probability.
NOISY_2BIT = GaussianLevelReRAM(bits_per_cell=2, level_table=((0.0, 0.08), (0.33, 0.08), (0.66, 0.08), (1.0, 0.08)))


@pytest.mark.parametrize("device", [reram(2), NOISY_2BIT], ids=["reram2", "noisy2"])
def test_four_bit_codes_in_two_bit_cells_structure(device):
    t = device.transition_matrix()
    p = code_transition_matrix(4, device)
    # Each entry is the product over the two cells (independent reads), MSB cell first.
    for i in range(16):
        for j in range(16):
            expected = t[i >> 2, j >> 2] * t[i & 3, j & 3]
            assert p[i, j] == pytest.approx(expected, rel=1e-9, abs=1e-300)
    # A one-level slip in the first cell moves the code by 4, one in the second cell by 1.
    for i in range(16):
        hi, lo = i >> 2, i & 3
        if hi < 3:
            assert p[i, i + 4] == pytest.approx(t[hi, hi + 1] * t[lo, lo], rel=1e-9)
        if lo < 3:
            assert p[i, i + 1] == pytest.approx(t[hi, hi] * t[lo, lo + 1], rel=1e-9)


def test_one_level_slip_in_first_cell_moves_code_by_four():
    p = code_transition_matrix(4, NOISY_2BIT)
    for i in range(16):
        hi, lo = i >> 2, i & 3
        off = p[i].copy()
        off[i] = 0.0
        # Every likely wrong read is a one-level slip of exactly one cell: a code distance of 1 or 4.
        likely = np.flatnonzero(off > 1e-3)
        assert len(likely) > 0
        assert set(np.abs(likely - i).tolist()) <= {1, 4}
        if hi < 3:
            assert i + 4 in likely
        if hi > 0:
            assert i - 4 in likely
        if lo < 3:
            assert i + 1 in likely
        # Code distances 2 and 3 need a two-level slip (or two slips): much rarer.
        for j in (i - 3, i - 2, i + 2, i + 3):
            if 0 <= j < 16:
                assert p[i, j] < 1e-3
    # The mean squared code error is dominated by first-cell slips (16x the cost of a low-cell slip).
    _, m2 = code_error_moments(4, NOISY_2BIT)
    _, m2_low = code_error_moments(2, NOISY_2BIT)
    assert float(m2[5]) > 10 * float(m2_low[1])


def test_four_bit_codes_in_three_bit_cells_partial_last_cell():
    d = reram(3)  # noisy enough for visible numbers
    t = d.transition_matrix()
    p = code_transition_matrix(4, d)  # 4 bits in 3-bit cells: [b3 b2 b1], [b0 0 0]
    # code 1: cells [0, 4]; reading code 0 needs cell 0 right and cell 1 read as 0..3.
    assert p[1, 0] == pytest.approx(t[0, 0] * t[4, :4].sum(), rel=1e-12)
    # code 0: cells [0, 0]; the last cell reading 1..3 still decodes to 0: costs nothing.
    assert p[0, 0] == pytest.approx(t[0, 0] * t[0, :4].sum(), rel=1e-12)
    # A slip in the first cell moves a 4-bit code by 2.
    assert p[2, 4] == pytest.approx(t[1, 2] * t[0, :4].sum(), rel=1e-12)


def test_three_bit_codes_in_two_bit_cells_partial_last_cell():
    d = reram(2)
    t = d.transition_matrix()
    p = code_transition_matrix(3, d)  # 3 bits in 2-bit cells: [b2 b1], [b0 0]
    assert cells_per_code(3, 2) == 2
    # code 1: cells [0, 2]; reading code 0 needs cell 0 right and cell 1 read as level 0 or 1.
    assert p[1, 0] == pytest.approx(t[0, 0] * t[2, :2].sum(), rel=1e-12)
    # code 0: cells [0, 0]; the last cell reading level 1 still decodes to 0.
    assert p[0, 0] == pytest.approx(t[0, 0] * t[0, :2].sum(), rel=1e-12)
    # A slip of the first cell from level 1 to 2 moves a 3-bit code by 2 (code 2 -> code 4).
    assert p[2, 4] == pytest.approx(t[1, 2] * t[0, :2].sum(), rel=1e-12)
    assert p[2, 4] > 0


@pytest.mark.parametrize("bits", [3, 4])
def test_code_error_moments_match_monte_carlo(bits):
    d = reram(3)
    m1, m2 = code_error_moments(bits, d)
    p = code_transition_matrix(bits, d)
    n_codes = 2**bits
    diff = np.arange(n_codes)[None, :] - np.arange(n_codes)[:, None]
    m4 = (p * diff.astype(float) ** 4).sum(axis=1)
    n = 100_000
    codes = torch.arange(n_codes, dtype=torch.uint8).repeat_interleave(n)
    noisy = read_codes(codes, bits, d, gen(11))
    e = (noisy.to(torch.int64) - codes.to(torch.int64)).reshape(n_codes, n).double()
    mc1, mc2 = e.mean(dim=1).numpy(), (e * e).mean(dim=1).numpy()
    a1, a2 = m1.double().numpy(), m2.double().numpy()
    var1 = a2 - a1**2
    var2 = m4 - a2**2
    assert np.all(np.abs(mc1 - a1) <= 5 * np.sqrt(var1 / n) + 1e-6)
    assert np.all(np.abs(mc2 - a2) <= 5 * np.sqrt(var2 / n) + 1e-6)
    # Not trivially zero: a 3-b/cell device produces measurable errors for every code.
    assert np.all(a2 > 0) and np.all(mc2 > 0)


def test_analytic_expected_squared_error_matches_monte_carlo():
    d = reram(3)
    bits = 3
    moments = code_error_moments(bits, d)
    w = torch.randn(192, 512, generator=gen(0))
    uc = quantize_uniform(w, bits, 128, clip_ratios=clip_grid(20), moments=moments)
    idx = torch.arange(w.shape[1]) // uc.group_size
    s = uc.scale[:, idx].double()
    q = uc.codes.long()
    e = uc.dequantize().double() - w.double()
    det = float((e * e).sum())
    analytic = float((e * e + 2 * e * s * moments[0].double()[q] + s * s * moments[1].double()[q]).sum())
    reads = 30
    total = 0.0
    for seed in range(reads):
        noisy = read_codes(uc.codes, bits, d, gen(1000 + seed))
        total += float(((uc.dequantize(noisy).double() - w.double()) ** 2).sum())
    mc = total / reads
    assert mc == pytest.approx(analytic, rel=0.01)
    # The noise-induced part alone (a few % of the total) also agrees.
    assert analytic - det > 0.01 * det
    assert (mc - det) == pytest.approx(analytic - det, rel=0.08)
