"""Device models: ReRAM level tables, read sampling, MRAM bit flips, user-defined devices."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.special import ndtr
from scipy.stats import norm

from qmc_edge.memory.cells import code_transition_matrix, codes_to_cells, read_codes
from qmc_edge.memory.models import RERAM_LEVELS, CellModel, GaussianLevelReRAM, IdealCells, reram
from qmc_edge.memory.mram import MRAMBitFlips
from qmc_edge.quant.read import read_tensor
from qmc_edge.quant.stages.pipeline import quantize_qmc


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- transition matrices


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_reram_transition_matrix_is_row_stochastic(bits):
    t = reram(bits).transition_matrix()
    assert t.shape == (2**bits, 2**bits)
    assert np.all(t >= 0)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # Reads are mostly right: the diagonal dominates every row.
    assert np.all(np.diag(t) > 0.99)


def test_three_bit_cell_error_rate_matches_reference():
    d = reram(3)
    t = d.transition_matrix()
    mean_err = 1.0 - float(np.mean(np.diag(t)))
    worst = 1.0 - float(np.min(np.diag(t)))
    # Reference: about 3.8e-3 on average, worst level about 9.4e-3 (our derivation gives 3.7e-3 / 8.9e-3).
    assert 3.3e-3 < mean_err < 4.2e-3
    assert 8.0e-3 < worst < 1.0e-2
    info = d.describe()
    assert info["mean_cell_error_rate"] == pytest.approx(mean_err)
    assert info["worst_level_error_rate"] == pytest.approx(worst)
    assert info["bits_per_cell"] == 3
    # Errors are to neighbouring levels: a two-level jump is negligible.
    far = np.abs(np.subtract.outer(np.arange(8), np.arange(8))) > 1
    assert t[far].max() < 1e-8
    # Neighbour probabilities sum up to the whole error rate.
    near = np.abs(np.subtract.outer(np.arange(8), np.arange(8))) == 1
    assert (t * near).sum(axis=1) == pytest.approx(1.0 - np.diag(t), rel=1e-5)


def test_two_bit_cell_is_near_error_free():
    d = reram(2)
    err = 1.0 - np.mean(np.diag(d.transition_matrix()))
    assert 0 < err < 1e-7
    assert not d.is_ideal  # not exactly error-free, so reads are still sampled


def test_one_bit_cell_is_effectively_ideal():
    d = reram(1)
    assert 1.0 - np.min(np.diag(d.transition_matrix())) < 1e-12


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_thresholds_lie_between_neighbouring_means(bits):
    d = reram(bits)
    thr = d.thresholds()
    table = RERAM_LEVELS[bits]
    assert thr.shape == (2**bits - 1,)
    for i, x in enumerate(thr):
        (m0, s0), (m1, s1) = table[i], table[i + 1]
        assert m0 < x < m1
        # Maximum-likelihood threshold: the two neighbouring densities are equal there.
        assert norm.pdf(x, m0, s0) == pytest.approx(norm.pdf(x, m1, s1), rel=1e-6)
    assert np.all(np.diff(thr) > 0)


def test_equal_sigmas_threshold_is_midpoint_and_matrix_is_analytic():
    d = GaussianLevelReRAM(bits_per_cell=1, level_table=((0.0, 0.2), (1.0, 0.2)))
    assert d.thresholds() == pytest.approx([0.5])
    p = float(ndtr(-0.5 / 0.2))
    np.testing.assert_allclose(d.transition_matrix(), [[1 - p, p], [p, 1 - p]], rtol=1e-12)


def test_reram_rejects_unsupported_cell_sizes():
    with pytest.raises(ValueError, match="bits per cell"):
        reram(4)
    with pytest.raises(ValueError):
        reram(0)
    with pytest.raises(ValueError, match="level table"):
        GaussianLevelReRAM(bits_per_cell=4)
    with pytest.raises(ValueError, match="levels"):
        GaussianLevelReRAM(bits_per_cell=2, level_table=((0.0, 0.1), (1.0, 0.1)))


# --------------------------------------------------------------------------- sampled reads


def test_read_statistics_match_transition_matrix():
    d = reram(3)
    t = d.transition_matrix()
    n = 200_000
    levels = torch.arange(8, dtype=torch.uint8).repeat_interleave(n)
    out = d.read(levels, gen(123))
    assert out.dtype == torch.uint8 and out.shape == levels.shape
    assert int(out.min()) >= 0 and int(out.max()) <= 7
    counts = np.zeros((8, 8))
    np.add.at(counts, (levels.numpy().astype(int), out.numpy().astype(int)), 1)
    checked = 0
    for i in range(8):
        for j in range(8):
            p = t[i, j]
            if p > 1e-5:  # non-negligible: binomial 5-sigma bound
                sigma = math.sqrt(n * p * (1 - p))
                assert abs(counts[i, j] - n * p) <= 5 * sigma + 1, (i, j, counts[i, j], n * p)
                checked += 1
            elif p < 1e-12:  # practically impossible transitions never happen
                assert counts[i, j] == 0, (i, j)
    assert checked >= 8 + 12  # every diagonal entry and most neighbour entries were tested


def test_read_is_reproducible_per_seed():
    d = reram(3)
    levels = torch.randint(0, 8, (50_000,), generator=gen(0)).to(torch.uint8)
    a = d.read(levels, gen(7))
    b = d.read(levels, gen(7))
    c = d.read(levels, gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Some reads are wrong (error rate ~4e-3 over 5e4 cells), and not the same ones for both seeds.
    assert int((a != levels).sum()) > 50
    assert not torch.equal(a != levels, c != levels)


def test_read_keeps_shape_and_dtype():
    d = reram(3)
    levels = torch.randint(0, 8, (3, 5, 7), generator=gen(1)).to(torch.uint8)
    out = d.read(levels, gen(2))
    assert out.shape == levels.shape and out.dtype == levels.dtype
    assert d.read(levels[:0], gen(2)).numel() == 0


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_ideal_device_reads_are_identity(bits):
    for d in (IdealCells(bits_per_cell=bits), reram(bits, ideal=True)):
        assert d.is_ideal
        np.testing.assert_array_equal(d.transition_matrix(), np.eye(2**bits))
        levels = torch.randint(0, 2**bits, (10_000,), generator=gen(0)).to(torch.uint8)
        assert torch.equal(d.read(levels, gen(1)), levels)
        assert d.describe()["mean_cell_error_rate"] == 0.0
    assert reram(3, ideal=True).bits_per_cell == 3


# --------------------------------------------------------------------------- MRAM


def test_mram_zero_ber_is_identity():
    codes = torch.randint(-127, 128, (1000,), generator=gen(0)).to(torch.int16)
    out = MRAMBitFlips(ber=0.0).flip(codes, 8, gen(1))
    assert torch.equal(out, codes)
    assert out.data_ptr() != codes.data_ptr()  # a copy, not an alias


@pytest.mark.parametrize("bits", [4, 8, 12])
def test_mram_half_ber_flips_about_half_the_bits(bits):
    n = 20_000
    lo, hi = -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1
    codes = torch.randint(lo, hi + 1, (n,), generator=gen(0)).to(torch.int16)
    out = MRAMBitFlips(ber=0.5).flip(codes, bits, gen(1))
    assert out.dtype == codes.dtype and out.shape == codes.shape
    # Results stay signed `bits`-bit integers.
    assert int(out.min()) >= -(2 ** (bits - 1)) and int(out.max()) <= 2 ** (bits - 1) - 1
    mask = (1 << bits) - 1
    diff = (codes.to(torch.int64) & mask) ^ (out.to(torch.int64) & mask)
    flipped = sum(int(((diff >> k) & 1).sum()) for k in range(bits))
    total = n * bits
    frac = flipped / total
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / total)


def test_mram_small_ber_flips_few_bits_reproducibly():
    codes = torch.zeros(100_000, dtype=torch.int16)
    m = MRAMBitFlips(ber=1e-3)
    a, b = m.flip(codes, 8, gen(3)), m.flip(codes, 8, gen(3))
    assert torch.equal(a, b)
    n_bits = sum(bin(int(v) & 0xFF).count("1") for v in a[a != 0])
    expected = 100_000 * 8 * 1e-3
    assert abs(n_bits - expected) < 5 * math.sqrt(expected)


# --------------------------------------------------------------------------- user-defined devices


@dataclass
class LeakyBinaryCell(CellModel):
    """A user's 1-bit cell with asymmetric errors, defined only by its transition matrix."""

    bits_per_cell: int = 1
    name: str = "leaky-1b"
    p01: float = 0.1
    p10: float = 0.2

    def transition_matrix(self) -> np.ndarray:
        return np.array([[1 - self.p01, self.p01], [self.p10, 1 - self.p10]])


def _bit_error_rates(codes: torch.Tensor, noisy: torch.Tensor, bits: int) -> tuple[float, float]:
    """Measured P(0 -> 1) and P(1 -> 0) over all bit positions of 'bits'-bit codes."""
    c, r = codes.to(torch.int64), noisy.to(torch.int64)
    n01 = n0 = n10 = n1 = 0
    for k in range(bits):
        cb, rb = (c >> k) & 1, (r >> k) & 1
        n0 += int((cb == 0).sum())
        n1 += int((cb == 1).sum())
        n01 += int(((cb == 0) & (rb == 1)).sum())
        n10 += int(((cb == 1) & (rb == 0)).sum())
    return n01 / n0, n10 / n1


def test_custom_transition_matrix_subclass_through_read_codes():
    dev = LeakyBinaryCell()
    assert not dev.is_ideal and dev.levels == 2
    codes = torch.randint(0, 8, (60_000,), generator=gen(0)).to(torch.uint8)
    noisy = read_codes(codes, 3, dev, gen(1))
    assert noisy.dtype == codes.dtype and int(noisy.max()) < 8
    p01, p10 = _bit_error_rates(codes, noisy, 3)
    n = 60_000 * 3 / 2
    assert abs(p01 - 0.1) < 5 * math.sqrt(0.1 * 0.9 / n)
    assert abs(p10 - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    # The analytic code-level matrix (used by the noise-aware quantizer) follows from it.
    p = code_transition_matrix(3, dev)
    assert p[0, 0] == pytest.approx(0.9**3)
    assert p[0b111, 0b011] == pytest.approx(0.2 * 0.8 * 0.8)


def test_custom_level_table_through_read_codes_and_quantizer():
    dev = GaussianLevelReRAM(bits_per_cell=1, level_table=((0.0, 0.2), (1.0, 0.2)))
    p = float(ndtr(-2.5))
    codes = torch.randint(0, 4, (50_000,), generator=gen(4)).to(torch.uint8)
    noisy = read_codes(codes, 2, dev, gen(5))
    p01, p10 = _bit_error_rates(codes, noisy, 2)
    n = 50_000
    for rate in (p01, p10):
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)
    # The unchanged quantizer accepts the user's device (2-bit codes in two 1-bit cells).
    w = torch.randn(16, 64, generator=gen(6))
    qt = quantize_qmc(w, 2, dev, rho=0.02, group_size=32)
    assert qt.cell_bits == 1
    assert qt.storage().reram_cells == 2 * w.numel()
    clean = qt.dequantize()
    read1 = read_tensor(qt, dev, generator=gen(7))
    read2 = read_tensor(qt, dev, generator=gen(7))
    assert torch.equal(read1, read2)
    assert not torch.equal(read1, clean)
    # Outliers live in MRAM and are untouched by the ReRAM noise.
    idx = qt.outliers.index
    assert torch.equal(read1.view(-1)[idx], clean.view(-1)[idx])


def test_custom_device_overriding_read():
    """A continuous model may override read(); read_codes uses it for the cells."""

    @dataclass
    class StuckAtZero(CellModel):
        bits_per_cell: int = 2
        name: str = "stuck"

        def transition_matrix(self) -> np.ndarray:
            t = np.zeros((4, 4))
            t[:, 0] = 1.0
            return t

        def read(self, levels, generator):
            return torch.zeros_like(levels)

    codes = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(read_codes(codes, 4, StuckAtZero(), gen(0)), torch.zeros(16, dtype=torch.uint8))
    # and the sampled default read agrees with the matrix
    assert torch.equal(
        CellModel.read(StuckAtZero(), codes_to_cells(codes, 4, 2), gen(0)), torch.zeros(16, 2, dtype=torch.uint8)
    )
