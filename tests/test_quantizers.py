"""Properties of the quantizers: QMC partition and error bounds, RTN/MXINT4/eMEM, storage bits by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qmc_edge.memory.models import IdealCells, reram
from qmc_edge.methods import PRESETS, TensorMethod, parse_method
from qmc_edge.quant.grids import quantize_emem_naive, quantize_mxint4, quantize_rtn
from qmc_edge.quant.read import read_tensor
from qmc_edge.quant.stages.outliers import outlier_positions, quantize_outliers
from qmc_edge.quant.stages.pipeline import quantize_qmc
from qmc_edge.quant.uniform import clip_grid, quantize_uniform


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def heavy_tailed(out: int, inf: int, seed: int) -> torch.Tensor:
    """Gaussian weights with a few large entries, like LLM weights."""
    g = gen(seed)
    w = torch.randn(out, inf, generator=g) * 0.02
    k = max(1, w.numel() // 200)
    idx = torch.randperm(w.numel(), generator=g)[:k]
    w.view(-1)[idx] *= 20
    return w


@given(
    out=st.integers(1, 24),
    inf=st.integers(1, 300),
    rho=st.floats(0.0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_outlier_count_is_exact_and_largest(out, inf, rho, seed):
    w = heavy_tailed(out, inf, seed)
    idx = outlier_positions(w, rho)
    k = round(rho * w.numel())
    assert idx.numel() == k
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == k
    if 0 < k < w.numel():
        a = w.abs().view(-1)
        rest = torch.ones(w.numel(), dtype=torch.bool)
        rest[idx] = False
        assert a[idx].min() >= a[rest].max()


def test_outlier_ties_are_broken_by_index():
    w = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5, 2.0]])
    # 3 outliers among four tied 2.0s: the lowest flat indices win, every time.
    assert outlier_positions(w, 0.5).tolist() == [1, 2, 3]
    assert outlier_positions(w.clone(), 0.5).tolist() == [1, 2, 3]


@pytest.mark.parametrize("rho", [-0.01, 0.51, 1.0])
def test_rho_out_of_range_is_refused(rho):
    with pytest.raises(ValueError, match="rho"):
        outlier_positions(torch.ones(4, 4), rho)
    with pytest.raises(ValueError, match="rho"):
        parse_method(f"qmc:rho={rho}")


@given(bits=st.sampled_from([2, 3, 4]), group=st.sampled_from([0, 16, 32, 50]), seed=st.integers(0, 2**16))
def test_noise_free_inlier_error_within_half_a_step(bits, group, seed):
    """Without clipping (ratio 1) every inlier is at most half a step from its value."""
    w = heavy_tailed(8, 100, seed)
    mask = torch.rand(w.shape, generator=gen(seed + 1)) > 0.05
    uc = quantize_uniform(w, bits, group, inlier_mask=mask)
    idx = torch.arange(w.shape[1]) // uc.group_size
    step = uc.scale[:, idx]
    err = (uc.dequantize() - w).abs()
    assert torch.all(err[mask] <= step[mask] / 2 * (1 + 1e-5) + 1e-7)
    assert int(uc.codes.max()) < 2**bits
    # Non-inliers decode to exactly 0 (their slot holds the zero-point code).
    assert torch.all(uc.dequantize()[~mask] == 0)


def test_clip_search_never_worse_than_min_max():
    w = heavy_tailed(64, 256, 3)
    plain = quantize_uniform(w, 3, 128)
    searched = quantize_uniform(w, 3, 128, clip_ratios=clip_grid(20))
    e_plain = ((plain.dequantize() - w) ** 2).sum()
    e_search = ((searched.dequantize() - w) ** 2).sum()
    assert e_search <= e_plain
    assert e_search < 0.95 * e_plain  # clipping pays on heavy-tailed weights


@given(bits=st.sampled_from([4, 6, 8]), seed=st.integers(0, 2**16))
def test_outlier_error_bound(bits, seed):
    v = torch.randn(50, generator=gen(seed)) * 3
    codes, scale = quantize_outliers(v, bits)
    qmax = 2 ** (bits - 1) - 1
    assert int(codes.abs().max()) <= qmax
    assert torch.all((codes.float() * scale - v).abs() <= scale / 2 * (1 + 1e-6))
    assert scale == pytest.approx(float(v.abs().max()) / qmax)


@pytest.mark.parametrize("bits,cell_bits", [(2, 2), (3, 3), (4, 2), (3, 1)])
def test_qmc_tensor_partition_and_errors(bits, cell_bits):
    w = heavy_tailed(96, 256, bits * 10 + cell_bits)
    qt = quantize_qmc(w, bits, reram(cell_bits, ideal=True), rho=0.01, group_size=128, n_clip=1)
    k = round(0.01 * w.numel())
    assert qt.outliers.count == k
    deq = qt.dequantize()
    flat_err = (deq - w).view(-1).abs()
    # Outliers: 8-bit symmetric, within half their step.
    assert torch.all(flat_err[qt.outliers.index] <= qt.outliers.scale / 2 * (1 + 1e-5))
    # Inliers (n_clip=1: plain min-max over inliers): within half their group's step.
    mask = torch.ones(w.numel(), dtype=torch.bool)
    mask[qt.outliers.index] = False
    step = qt.inliers.scale[:, torch.arange(256) // 128].reshape(-1)
    assert torch.all(flat_err[mask] <= step[mask] / 2 * (1 + 1e-5) + 1e-8)
    assert qt.code_memory == "reram" and qt.meta_memory == "mram" and qt.cell_bits == cell_bits


def test_removing_outliers_shrinks_the_inlier_step():
    w = heavy_tailed(64, 256, 7)
    plain = quantize_rtn(w, 3, 128)
    qt = quantize_qmc(w, 3, IdealCells(3), rho=0.01, n_clip=1)
    assert qt.inliers.scale.mean() < 0.8 * plain.inliers.scale.mean()
    assert ((qt.dequantize() - w) ** 2).sum() < 0.5 * ((plain.dequantize() - w) ** 2).sum()


def test_noise_aware_clip_lowers_expected_error_under_noise_and_is_plain_mse_without():
    from qmc_edge.memory.cells import code_error_moments

    w = heavy_tailed(64, 512, 11)
    dev = reram(3)
    m1, m2 = code_error_moments(3, dev)
    aware = quantize_qmc(w, 3, dev, rho=0.01, noise_aware=True)
    blind = quantize_qmc(w, 3, dev, rho=0.01, noise_aware=False)

    def expected(qt):
        s = qt.inliers.scale[:, torch.arange(512) // 128]
        e = qt.dequantize() - w
        q = qt.inliers.codes.long()
        return float((e * e + 2 * e * s * m1[q] + s * s * m2[q]).sum())

    assert expected(aware) < expected(blind)
    # On an ideal device the noise-aware search is exactly the plain MSE search.
    ideal_a = quantize_qmc(w, 3, reram(3, ideal=True), rho=0.01, noise_aware=True)
    ideal_b = quantize_qmc(w, 3, reram(3, ideal=True), rho=0.01, noise_aware=False)
    assert torch.equal(ideal_a.inliers.codes, ideal_b.inliers.codes)


def test_same_seed_same_noisy_read_and_different_seeds_differ():
    w = heavy_tailed(64, 256, 5)
    qt = quantize_qmc(w, 3, reram(3), rho=0.01)
    a = read_tensor(qt, reram(3), None, gen(1))
    b = read_tensor(qt, reram(3), None, gen(1))
    c = read_tensor(qt, reram(3), None, gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Outliers live in error-free MRAM: untouched by the ReRAM noise.
    assert torch.equal(a.view(-1)[qt.outliers.index], qt.dequantize().view(-1)[qt.outliers.index])


def test_mxint4_blocks_share_power_of_two_scales():
    w = heavy_tailed(16, 96, 2)
    qt = quantize_mxint4(w)
    s = qt.inliers.scale
    assert s.shape == (16, 3)
    assert torch.all(torch.log2(s) == torch.round(torch.log2(s)))
    assert int(qt.inliers.codes.max()) <= 15
    # Step = 2**(floor(log2 amax) - 2): the block maximum lands within one step (it may saturate).
    err = (qt.dequantize() - w).abs().reshape(16, 3, 32)
    assert torch.all(err <= s[..., None] * 1.0 + 1e-9)


def test_emem_naive_uses_rtn_codes_in_reram():
    w = heavy_tailed(32, 256, 9)
    a = quantize_emem_naive(w, 3, reram(3))
    b = quantize_rtn(w, 3)
    assert torch.equal(a.inliers.codes, b.inliers.codes)
    assert a.code_memory == "reram" and a.meta_memory == "mram" and a.outliers is None
    noisy = read_tensor(a, reram(3), None, gen(0))
    assert not torch.equal(noisy, a.dequantize())


def test_storage_bits_by_hand():
    """QMC 3-bit in 3-bit cells on a 64x256 tensor, group 128, rho 1%: every component by hand."""
    w = heavy_tailed(64, 256, 4)
    qt = quantize_qmc(w, 3, reram(3), rho=0.01)
    s = qt.storage()
    n = 64 * 256
    k = round(0.01 * n)
    assert s.reram_cells == n
    assert s.components["codes"] == ("reram", n * 3)
    assert s.components["scales"] == ("mram", 64 * 2 * 16)
    assert s.components["zero_points"] == ("mram", 64 * 2 * 3)
    assert s.components["outlier_values"] == ("mram", k * 8 + 16)
    assert s.components["outlier_index"] == ("mram", k * 8 + 64 * math.ceil(math.log2(257)))
    # 3-bit codes in 2-bit cells take two physical cells (4 bits of capacity) each.
    s2 = quantize_qmc(w, 3, reram(2), rho=0.01).storage()
    assert s2.reram_cells == 2 * n and s2.components["codes"] == ("reram", n * 4)
    # MXINT4: 4 bits per element + an 8-bit shared exponent per 32, no zero points.
    sm = quantize_mxint4(w).storage()
    assert sm.total == n * 4 + 64 * 8 * 8


def _check_layout(preset: str, spec, qt) -> None:
    """A quantized tensor has the layout its preset promises: code bits, codes in range, memories."""
    lay = spec.expected_layout(qt.shape)
    assert qt.inliers.bits == lay["bits"] == spec.nominal_bits
    assert int(qt.inliers.codes.max()) < 2**qt.inliers.bits
    assert qt.code_memory == lay["code_memory"] == ("reram" if preset.startswith(("emem", "qmc")) else "dram")
    if qt.code_memory == "reram":
        assert qt.cell_bits == lay["cell_bits"] and qt.meta_memory == "mram"
    assert qt.dequantize().shape == qt.shape and torch.isfinite(qt.dequantize()).all()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_parses_and_quantizes(preset, tiny_lm):
    """Every preset quantizes a weight into the layout it promises: per-tensor methods here on a
    heavy-tailed weight, QMC+GPTQ on the tiny model with synthetic calibration text; the library
    baselines where their library is installed (else they say which extra is missing, in one line)."""
    from test_gptq import _calib

    from qmc_edge.errors import QMCError
    from qmc_edge.methods.whole_model import target_weights
    from qmc_edge.quant.stages.pipeline import run_stages

    spec = parse_method(preset)
    if spec.method == "fp":
        assert spec.quantize(None, []) is None  # the reference quantizes nothing
        return
    if spec.method == "qmc" and spec.calibrated:
        names = target_weights(tiny_lm.model)[:3]
        qm = run_stages(spec, tiny_lm.model, names, tiny_lm.tokenizer, None, _calib(tiny_lm.tokenizer))
        for qt in qm.tensors.values():
            _check_layout(preset, spec, qt)
        return
    if spec.calibrated:  # llm-compressor's GPTQ and AWQ: their own environment runs them (test_external.py)
        try:
            import llmcompressor  # noqa: F401
        except ImportError:
            with pytest.raises(QMCError, match=r"pip install 'qmc-edge\[(gptq|awq)\]'"):
                spec.quantize(tiny_lm.model, target_weights(tiny_lm.model)[:1], tiny_lm.tokenizer)
            return
        qm = spec.quantize(tiny_lm.model, target_weights(tiny_lm.model)[:1], tiny_lm.tokenizer)
        for qt in qm.tensors.values():
            _check_layout(preset, spec, qt)
        return
    assert isinstance(spec, TensorMethod)
    _check_layout(preset, spec, spec.quantize_tensor(heavy_tailed(16, 128, 1)))
