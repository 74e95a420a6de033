"""The offset outlier code: sign + magnitude above the outlier threshold, every code used."""

from __future__ import annotations

import pytest
import torch

from qmc_edge.memory.models import reram
from qmc_edge.methods import parse_method
from qmc_edge.quant.gptq_solver import gptq_round
from qmc_edge.quant.qtensor import mram_fields
from qmc_edge.quant.stages.outliers import outlier_positions, outlier_table
from qmc_edge.quant.stages.pipeline import quantize_qmc


def _outliers(seed: int = 0, n: int = 96 * 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(96, 256, generator=g) * 0.02
    w.view(-1)[torch.randperm(w.numel(), generator=g)[:200]] *= 12
    idx = outlier_positions(w, 0.02)
    return w, idx, w.reshape(-1)[idx]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_offset_code_uses_every_code_and_stays_within_half_a_step(bits):
    _, idx, v = _outliers()
    t = outlier_table(idx, v, bits, "offset")
    top = 2 ** (bits - 1)
    assert t.code == "offset" and t.offset == pytest.approx(float(v.abs().min()))
    assert int(t.codes.min()) >= -top and int(t.codes.max()) <= top - 1
    assert int(t.codes.min()) == -top or int(t.codes.max()) == top - 1  # the extreme magnitude is reached
    err = (t.values() - v).abs()
    assert float(err.max()) <= t.scale / 2 + 1e-7
    assert torch.equal(torch.sign(t.values()), torch.sign(v))  # never rounds across zero
    # the smallest and the largest magnitude are represented exactly (up to float32 rounding)
    amax = int(v.abs().argmax())
    assert float(t.values()[amax]) == pytest.approx(float(v[amax]), rel=1e-6)


def test_offset_code_beats_symmetric_at_three_bits_and_costs_sixteen_bits():
    _, idx, v = _outliers()
    sym, off = outlier_table(idx, v, 3, "symmetric"), outlier_table(idx, v, 3, "offset")
    mse = {c.code: float(((c.values() - v) ** 2).mean()) for c in (sym, off)}
    assert mse["offset"] < 0.5 * mse["symmetric"]
    w, _, _ = _outliers()
    a = quantize_qmc(w, 3, reram(3), rho=0.02, n_clip=2)
    b = quantize_qmc(w, 3, reram(3), rho=0.02, n_clip=2, outlier_code="offset")
    assert b.storage().total - a.storage().total == 16
    assert mram_fields(b)["outlier_offset"] == 16 and "outlier_offset" not in mram_fields(a)
    with pytest.raises(ValueError, match="outlier code"):
        outlier_table(idx, v, 3, "log")


def test_gptq_rounds_outliers_on_the_offset_grid():
    w, idx, v = _outliers(1)
    table = outlier_table(idx, v, 4, "offset")
    qt = quantize_qmc(w, 3, reram(3), rho=0.02, n_clip=2, outlier_code="offset")
    mask = torch.zeros(w.shape, dtype=torch.bool)
    mask.view(-1)[idx] = True
    x = torch.randn(512, w.shape[1], generator=torch.Generator().manual_seed(2))
    h = x.T @ x
    _, ocodes, _ = gptq_round(w, h, qt.inliers, mask, outliers=table)
    got = ocodes.reshape(-1)[idx]
    assert int(got.min()) >= -8 and int(got.max()) <= 7
    # GPTQ moves the values it has not rounded yet, so not every code is the nearest one; most are
    same = float((got == table.codes).float().mean())
    assert 0.9 < same
    # every outlier read back keeps its sign and a magnitude of at least the threshold
    vals = table.values(got)
    assert bool((vals.abs() >= table.offset - 1e-7).all())


def test_option_label_and_refusals():
    spec = parse_method("qmc3:outlier_code=offset")
    assert "outlier_code=offset" in spec.name
    assert spec.expected_layout((8, 128))["outlier_code"] == "offset"
    with pytest.raises(ValueError, match="outlier_code"):
        parse_method("qmc3:outlier_code=log")
    with pytest.raises(ValueError, match="outlier_code"):
        parse_method("emem3:outlier_code=offset")
