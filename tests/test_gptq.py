"""QMC+GPTQ: QMC's outlier split and ranges with GPTQ's rounding. What must hold: the split and the
grid are QMC's own, codes stay in their bit widths, with an uninformative Hessian GPTQ is plain
rounding, with a real one it lowers the error GPTQ minimises, and the model is left as it was.
(Parity with llm-compressor's GPTQ solver is in tests/test_external.py, where the library is.)"""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_text
from test_quantizers import heavy_tailed

from qmc_edge.errors import QMCError
from qmc_edge.memory.models import reram
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report, target_weights
from qmc_edge.quant.calibration import CalibrationSet
from qmc_edge.quant.gptq_solver import gptq_round
from qmc_edge.quant.stages.pipeline import quantize_qmc, run_stages
from qmc_edge.quant.stages.rounding import gptq_tensor, gptq_tensors
from qmc_edge.quant.uniform import clip_grid, quantize_uniform


def _calib(tokenizer, n: int = 8, seq_len: int = 48) -> CalibrationSet:
    ids = tokenizer(synthetic_text(seed=1), add_special_tokens=False)["input_ids"]
    return CalibrationSet(tuple(tuple(ids[i * seq_len : (i + 1) * seq_len]) for i in range(n)), "synthetic", 0)


def quantize_qmc_gptq_tensor(w, hessian, bits, dev, rho=0.01, group_size=128):
    """One tensor through QMC's GPTQ rounding strategy (the method's own per-tensor step)."""
    spec = parse_method(f"qmc:bits={bits},cell_bits={dev.bits_per_cell},rho={rho},group_size={group_size}")
    return gptq_tensor(spec, w, hessian)


def _hessian(inf: int, seed: int, n: int = 400) -> torch.Tensor:
    """2 X Xᵀ / n of correlated inputs (a shared factor plus noise), like a layer's activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g) @ torch.randn(8, inf, generator=g) + 0.3 * torch.randn(n, inf, generator=g)
    return 2 * x.T @ x / n


def _hessian_error(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> float:
    d = (w - q).double()
    return float(torch.einsum("ri,ij,rj->", d, h.double(), d))


def test_split_and_grid_are_qmcs_and_codes_in_range():
    w = heavy_tailed(24, 200, 3)  # 200 columns: a full group of 128 and a partial one of 72
    dev = reram(3)
    qt, info = quantize_qmc_gptq_tensor(w, _hessian(200, 0), 3, dev, rho=0.02)
    ref = quantize_qmc(w, 3, dev, rho=0.02)
    assert info["hessian_ok"]
    assert torch.equal(qt.outliers.index, ref.outliers.index) and qt.outliers.scale == ref.outliers.scale
    assert torch.equal(qt.inliers.scale, ref.inliers.scale) and torch.equal(qt.inliers.zero, ref.inliers.zero)
    assert int(qt.inliers.codes.max()) <= 7 and int(qt.outliers.codes.abs().max()) <= 127
    # outlier slots in the dense array hold the zero-point code, as in QMC
    gz = qt.inliers.zero[:, torch.arange(200) // 128].reshape(-1)
    assert torch.equal(qt.inliers.codes.reshape(-1)[qt.outliers.index].float(), gz[qt.outliers.index])
    assert qt.storage().components == ref.storage().components  # same format, same bits
    # GPTQ moved codes (it is not plain rounding on this Hessian) ...
    assert not torch.equal(qt.inliers.codes, ref.inliers.codes)


def test_identity_hessian_gives_nearest_rounding():
    """With H = I no column's error can be compensated by another: GPTQ reduces to rounding."""
    w = heavy_tailed(16, 160, 5)
    inl = torch.ones_like(w, dtype=torch.bool)
    grid = quantize_uniform(w, 3, 64, clip_ratios=clip_grid(5))
    codes, ocodes, info = gptq_round(w, torch.eye(160), grid, ~inl)
    assert torch.equal(codes, grid.codes) and not ocodes.any() and info["hessian_ok"]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_lowers_the_output_error_it_minimises(bits):
    w, h = heavy_tailed(32, 192, bits), _hessian(192, bits)
    dev = reram(3)
    qt, _ = quantize_qmc_gptq_tensor(w, h, bits, dev, rho=0.01, group_size=64)
    near = quantize_qmc(w, bits, dev, rho=0.01, group_size=64)
    assert _hessian_error(w, qt.dequantize(), h) < 0.8 * _hessian_error(w, near.dequantize(), h)


def test_not_positive_definite_falls_back_to_rounding():
    w = heavy_tailed(8, 64, 1)
    grid = quantize_uniform(w, 4, 32)
    codes, _, info = gptq_round(w, -torch.eye(64), grid)
    assert not info["hessian_ok"] and torch.equal(codes, grid.codes)


def test_whole_model_block_by_block(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    spec = parse_method("qmc3-gptq:group_size=32")
    assert spec.calibrated and spec.name == "QMC+GPTQ 3b g32 rho=0.01 @3b/cell"
    names = target_weights(model)
    calib = _calib(tok)
    qm = run_stages(spec, model, names, tok, None, calib)
    assert list(qm.tensors) == names and not qm.info["nearest_rounding_fallback"]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # model restored
    again = run_stages(spec, model, names, tok, None, calib)  # deterministic
    assert all(torch.equal(qm.tensors[n].inliers.codes, again.tensors[n].inliers.codes) for n in names)
    # Same storage as QMC with nearest rounding: only the choice of codes differs.
    near = quantize_model(model, parse_method("qmc3:group_size=32"))
    assert storage_report(model, spec, qm) == storage_report(model, near.spec, near)
    # It pays where GPTQ says it should: the model's outputs on unseen text move less than with nearest
    # rounding (same split, same ranges, ideal reads to isolate the rounding).
    ids = torch.tensor([tok(synthetic_text(30, seed=7), add_special_tokens=False)["input_ids"][:96]])
    params = dict(model.named_parameters())
    with torch.no_grad():
        ref = model(ids).logits
        errs = []
        for q in (qm, near):
            for n, t in q.tensors.items():
                params[n].copy_(t.dequantize())  # an error-free read
            errs.append(float((model(ids).logits - ref).pow(2).mean()))
            q.restore(model)
    assert errs[0] < errs[1]


def test_needs_tokenizer_and_rejects_bad_options(tiny_lm):
    with pytest.raises(QMCError, match="tokenizer"):
        quantize_model(tiny_lm.model, parse_method("qmc3-gptq"))
    with pytest.raises(ValueError, match="rtn has no option 'rounding'"):
        parse_method("rtn:rounding=gptq")
    with pytest.raises(ValueError, match="quantize_embeddings"):
        parse_method("qmc3-gptq:quantize_embeddings=true")
    with pytest.raises(ValueError, match="calib_samples applies only to calibrated"):
        parse_method("qmc3:calib_samples=8")  # nearest rounding reads no text


def test_missing_calibration_text_names_the_extra(monkeypatch, tiny_lm):
    import sys

    from qmc_edge.quant.calibration import calibration_text

    calibration_text.cache_clear()  # where gensim is installed, an earlier test may have read the text
    monkeypatch.setitem(sys.modules, "gensim", None)  # import gensim now fails as if not installed
    with pytest.raises(QMCError, match=r"pip install 'qmc-edge\[calibration\]'"):
        quantize_model(tiny_lm.model, parse_method("qmc3-gptq"), tokenizer=tiny_lm.tokenizer)


def test_artifact_round_trip(tiny_lm, tmp_path):
    """QMC+GPTQ keeps QMC's format, so the packed artifact holds it bit for bit and records the rounding."""
    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.artifact.load import load_artifact

    spec = parse_method("qmc3-gptq:group_size=32")
    qm = run_stages(spec, tiny_lm.model, target_weights(tiny_lm.model), None, None, _calib(tiny_lm.tokenizer))
    export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    assert art.manifest.method["rounding"] == "gptq"
    for name, qt in qm.tensors.items():
        got = art.quantized.tensors[name]
        assert torch.equal(got.inliers.codes, qt.inliers.codes) and torch.equal(got.outliers.codes, qt.outliers.codes)


@pytest.mark.parametrize("outlier_code", ["symmetric", "offset"])
def test_tensors_sharing_a_hessian_get_the_codes_they_get_alone(outlier_code):
    """q, k and v (or gate and up) are rounded in one stacked GPTQ pass: GPTQ treats rows alike and
    independently, so each tensor's codes, outlier codes and loss must be the ones it gets alone."""
    spec = parse_method(f"qmc:bits=3,rho=0.02,group_size=64,outlier_code={outlier_code}")
    h = _hessian(160, 4)
    ws = [heavy_tailed(rows, 160, seed) for rows, seed in ((48, 1), (16, 2), (16, 3))]
    stacked = gptq_tensors(spec, ws, h)
    for w, (qt, info) in zip(ws, stacked, strict=True):
        alone, info1 = gptq_tensor(spec, w, h)
        assert torch.equal(qt.inliers.codes, alone.inliers.codes)
        assert torch.equal(qt.outliers.codes, alone.outliers.codes) and qt.outliers.scale == alone.outliers.scale
        assert info["gptq_loss"] == pytest.approx(info1["gptq_loss"], rel=1e-6)


def _expected_output_error(w: torch.Tensor, qt, dev, h: torch.Tensor) -> float:
    """E[(w - read) H (w - read)ᵀ] over device reads: the mean read's error through H, plus each
    weight's read variance through H's diagonal (cells err independently)."""
    from qmc_edge.memory.cells import code_error_moments

    inl = qt.inliers
    m1, m2 = code_error_moments(inl.bits, dev)
    idx = torch.arange(w.shape[1]) // inl.group_size
    s = inl.scale[:, idx]
    q = inl.codes.long()
    mean_read = qt.dequantize() + s * m1[q]
    var = s * s * (m2[q] - m1[q] ** 2)
    out = torch.zeros(w.numel(), dtype=torch.bool)
    out[qt.outliers.index] = True
    out = out.reshape(w.shape)
    mean_read[out] = qt.dequantize()[out]  # outliers are read from MRAM
    var[out] = 0.0
    return _hessian_error(w, mean_read, h) + float((var.double() * h.diagonal().double()[None, :]).sum())


@pytest.mark.parametrize("bits,cells", [(2, 2), (3, 3)])
def test_noise_aware_gptq_never_worse_in_expected_error(bits, cells):
    w, h = heavy_tailed(48, 256, bits + 10), _hessian(256, bits + 10)
    text = f"qmc:bits={bits},cell_bits={cells},rho=0.01,group_size=64,rounding=gptq,target_age=1d,age=1d"
    plain, aware = parse_method(text), parse_method(text + ",gptq_noise=true")
    dev = plain.cells(for_search=True)
    qp, _ = gptq_tensor(plain, w, h)
    qa, _ = gptq_tensor(aware, w, h)
    assert not torch.equal(qp.inliers.codes, qa.inliers.codes)  # it changed some codes ...
    e_plain, e_aware = _expected_output_error(w, qp, dev, h), _expected_output_error(w, qa, dev, h)
    assert e_aware <= e_plain  # ... and never for the worse


def test_noise_aware_gptq_without_noise_is_plain_gptq():
    w, h = heavy_tailed(16, 128, 4), _hessian(128, 4)
    base = "qmc:bits=3,cell_bits=3,group_size=64,rounding=gptq,ideal_memory=true"
    a, _ = gptq_tensor(parse_method(base), w, h)
    b, _ = gptq_tensor(parse_method(base + ",gptq_noise=true"), w, h)
    assert torch.equal(a.inliers.codes, b.inliers.codes)
    with pytest.raises(ValueError, match="applies to rounding=gptq"):
        parse_method("qmc:gptq_noise=true")


def test_gptq_with_fisher_ranked_outliers(tiny_lm, monkeypatch):
    """outliers_by=fisher with GPTQ rounding: the split is the one nearest rounding makes from the same
    Fisher (the rounding changes codes, not which weights go to MRAM), not the magnitude rule's; and
    GPTQ re-rounds the inliers on that split."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    names = target_weights(model)
    calib = _calib(tok)
    spec = parse_method("qmc3-gptq:group_size=32,rho=0.02,outliers_by=fisher")
    gptq = run_stages(spec, model, names, tok, None, calib)
    near = quantize_model(model, parse_method("qmc3:group_size=32,rho=0.02,outliers_by=fisher"), tokenizer=tok)
    mag = run_stages(parse_method("qmc3-gptq:group_size=32,rho=0.02"), model, names, tok, None, calib)
    moved = 0
    for n in names:
        assert torch.equal(gptq.tensors[n].outliers.index, near.tensors[n].outliers.index), n
        moved += int((~torch.isin(gptq.tensors[n].outliers.index, mag.tensors[n].outliers.index)).sum())
    assert moved > 0
    assert any(not torch.equal(gptq.tensors[n].inliers.codes, near.tensors[n].inliers.codes) for n in names)
    # and the method, through the whole-model entry point, rounds with GPTQ (not the nearest-rounding path)
    monkeypatch.setattr("qmc_edge.quant.calibration.calibration_set", lambda *a, **k: calib)
    whole = spec.quantize(model, names, tok)
    assert all(torch.equal(whole.tensors[n].inliers.codes, gptq.tensors[n].inliers.codes) for n in names)


def test_a_layer_gptq_cannot_round_is_printed_and_stored(tiny_lm, monkeypatch, capsys):
    """No silent fallback: a layer whose Hessian has no Cholesky factor is rounded to nearest, listed in
    the quantization info, printed by the commands and stored as a column of sweep rows."""
    import json

    import qmc_edge.quant.gptq_solver as solver
    from qmc_edge.cli.eval_cmds import warn_gptq_fallback
    from qmc_edge.sweep.run import _gptq_fallback

    real = solver.inverse_hessian_factor
    calls = []

    def no_factor_for_the_first(h, w, damp=solver.DAMP):
        calls.append(1)
        if len(calls) == 1:
            return torch.eye(h.shape[0]), False
        return real(h, w, damp)

    monkeypatch.setattr(solver, "inverse_hessian_factor", no_factor_for_the_first)
    names = target_weights(tiny_lm.model)
    qm = run_stages(
        parse_method("qmc3-gptq:group_size=32"),
        tiny_lm.model,
        names,
        tiny_lm.tokenizer,
        None,
        _calib(tiny_lm.tokenizer),
    )
    fell = qm.info["nearest_rounding_fallback"]
    assert len(fell) >= 1 and set(fell) <= set(names)
    warn_gptq_fallback("QMC+GPTQ 3b", qm.info)
    printed = capsys.readouterr()
    assert "rounded to nearest, not by GPTQ" in printed.out + printed.err and fell[0] in printed.out + printed.err
    assert json.loads(_gptq_fallback({"quantize_info": qm.info})) == fell
    assert _gptq_fallback({"quantize_info": {}}) is None
