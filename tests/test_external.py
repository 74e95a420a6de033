"""Library baselines (GPTQ and AWQ from llm-compressor, HQQ from hqq) read back into the project's
containers: codes within the bit width, and dequantized weights and model outputs equal to the
library's own. Skipped where the optional extras are not installed."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from conftest import synthetic_text

from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import QuantizedModel, quantize_model, storage_report, target_weights


def test_presets_place_codes_in_reram():
    spec = parse_method("emem-gptq3")
    assert spec.method == "gptq" and spec.bits == 3 and spec.uses_reram and spec.noisy
    assert spec.name == "eMEM-GPTQ 3b g128 @3b/cell"
    assert parse_method("awq4").name == "AWQ-INT4 g128" and not parse_method("awq4").uses_reram
    with pytest.raises(ValueError, match="use emem"):
        parse_method("rtn:bits=3,reram=true")
    with pytest.raises(ValueError, match="quantize_embeddings"):
        parse_method("gptq:quantize_embeddings=true")


def test_missing_extra_names_it(monkeypatch, tiny_model):
    from qmc_edge.libraries import require

    monkeypatch.setitem(sys.modules, "hqq", None)  # import hqq now fails as if not installed
    with pytest.raises(QMCError, match=r"pip install 'qmc-edge\[hqq\]'"):
        require("hqq")
    with pytest.raises(QMCError, match=r"qmc-edge\[hqq\]"):
        quantize_model(tiny_model, parse_method("hqq4"))


# ---------------------------------------------------------------- HQQ


@pytest.mark.parametrize("bits", [3, 4])
def test_hqq_codes_and_dequantization_match_library(bits):
    pytest.importorskip("hqq")
    from qmc_edge.libraries.hqq_adapter import hqq_reference, quantize_hqq

    torch.manual_seed(bits)
    w = torch.randn(48, 200) * 0.05  # 200 = one full group of 128 + a partial group of 72
    qt = quantize_hqq(w, bits, 128)
    assert qt.inliers.scale.shape == (48, 2) and qt.inliers.group_size == 128
    assert int(qt.inliers.codes.max()) <= 2**bits - 1
    assert int(qt.inliers.codes.max()) == 2**bits - 1 and int(qt.inliers.codes.min()) == 0  # full range used
    torch.testing.assert_close(qt.dequantize(), hqq_reference(w, bits, 128), rtol=0, atol=1e-6)
    # The HQQ solver beats plain min-max rounding on its own kind of error, not just matches it.
    from qmc_edge.quant.grids import quantize_rtn

    assert (qt.dequantize() - w).abs().pow(0.7).sum() < (quantize_rtn(w, bits, 128).dequantize() - w).abs().pow(
        0.7
    ).sum()


def test_hqq_whole_model_and_reram_storage(tiny_model):
    pytest.importorskip("hqq")
    spec = parse_method("emem-hqq3:group_size=32")
    qm = quantize_model(tiny_model, spec)
    assert set(qm.tensors) == set(target_weights(tiny_model))
    rep = storage_report(tiny_model, spec, qm)
    # 3-bit codes in 3-bit cells, fp16 scale + fp16 (real-valued) zero per 32 weights
    assert rep["effective_bits"] == pytest.approx(3 + 32 / 32)
    assert set(rep["bits_by_memory"]) >= {"reram", "mram"}
    ideal = parse_method("hqq3:group_size=32")
    assert "reram" not in storage_report(tiny_model, ideal, quantize_model(tiny_model, ideal))["bits_by_memory"]


# ---------------------------------------------------------------- GPTQ and AWQ


def _tiny_calibration(tokenizer, n: int = 8, seq_len: int = 48):
    from qmc_edge.quant.calibration import CalibrationSet

    ids = tokenizer(synthetic_text(seed=1), add_special_tokens=False)["input_ids"]
    return CalibrationSet(tuple(tuple(ids[i * seq_len : (i + 1) * seq_len]) for i in range(n)), "synthetic", 0)


@pytest.mark.parametrize(("method", "bits"), [("gptq", 3), ("gptq", 4), ("awq", 3)])
def test_llmc_codes_match_library_output(tiny_lm, method, bits):
    pytest.importorskip("llmcompressor")
    from qmc_edge.libraries.llmcompressor_adapter import from_library_model, run_oneshot

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    names = target_weights(model)
    group = 48  # 64- and 128-wide layers: partial last groups, as 576 columns with group 128 in SmolLM2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    work = run_oneshot(copy.deepcopy(model), tok, method, bits, group, _tiny_calibration(tok))
    tensors, overrides, worst = from_library_model(model, work, names, bits)
    assert worst < 1e-6
    for qt in tensors.values():
        assert qt.inliers.codes.dtype == torch.uint8 and int(qt.inliers.codes.max()) <= 2**bits - 1
        assert qt.inliers.n_groups == -(-qt.shape[1] // group)
    if method == "awq":
        assert any("layernorm" in n for n in overrides)  # AWQ folds its scales into the norms
    else:
        assert not overrides
    # Our realisation reproduces the library model's outputs (its forward fake-quantizes the weights).
    spec = parse_method(f"{method}:bits={bits},group_size={group}")
    ref = {n: before[n] for n in [*tensors, *overrides]}
    qm = QuantizedModel(spec, tensors, 0.0, ref, overrides)
    ids = torch.tensor([tok(synthetic_text(20, seed=3), add_special_tokens=False)["input_ids"][:64]])
    with torch.no_grad():
        qm.realise(model, None)  # ideal memory: no noise seed
        ours = model(ids).logits
        theirs = work(ids).logits
        qm.restore(model)
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        changed = (ours - model(ids).logits).abs().max()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert changed > 1e-3  # quantization did change the outputs: the comparison above is not vacuous


def test_calibrated_method_through_quantize_model(tiny_lm):
    pytest.importorskip("llmcompressor")
    pytest.importorskip("gensim")
    spec = parse_method("emem-gptq3:group_size=32,calib_samples=2,calib_len=32")
    with pytest.raises(QMCError, match="tokenizer"):
        quantize_model(tiny_lm.model, spec)
    qm = quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer)
    assert all(qt.code_memory == "reram" and qt.cell_bits == 3 for qt in qm.tensors.values())
    assert qm.info["calibration"]["samples"] == 2 and qm.info["calibration"]["seq_len"] == 32
    # The ideal-memory twin reuses the cached run (same codes) and stays in ideal memory.
    ideal = quantize_model(
        tiny_lm.model, parse_method("gptq3:group_size=32,calib_samples=2,calib_len=32"), None, tiny_lm.tokenizer
    )
    name = next(iter(qm.tensors))
    assert ideal.tensors[name].code_memory == "dram"
    assert torch.equal(ideal.tensors[name].inliers.codes, qm.tensors[name].inliers.codes)


# ---------------------------------------------------------------- QMC+GPTQ against the library's solver


@pytest.mark.parametrize("bits", [3, 4])
def test_gptq_solver_matches_llm_compressor(bits):
    """Our GPTQ solver (qmc_edge.quant.gptq_solver, which adds outliers) equals llm-compressor's on the same weight,
    Hessian and grid when there are no outliers: same codes, same dequantized weight."""
    pytest.importorskip("llmcompressor")
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    from test_gptq import _hessian
    from test_quantizers import heavy_tailed

    from qmc_edge.libraries.llmcompressor_adapter import weight_args
    from qmc_edge.quant.gptq_solver import gptq_round
    from qmc_edge.quant.uniform import quantize_uniform

    w, h = heavy_tailed(40, 200, bits), _hessian(200, bits)  # a partial last group, as SmolLM2's 576 columns
    grid = quantize_uniform(w, bits, 128)
    codes, ocodes, info = gptq_round(w, h, grid)
    ours = grid.dequantize(codes)
    half = 2 ** (bits - 1)  # the library's codes are signed: ours - 2**(b-1), zero points likewise
    lib, _, fallback = quantize_weight(
        w[None].clone(),
        h[None].clone(),
        grid.scale[None].clone(),
        (grid.zero - half).to(torch.int8)[None],
        None,
        QuantizationArgs(**weight_args(bits, 128), actorder="static"),  # the GPTQModifier default
    )
    assert not bool(fallback[0]) and info["hessian_ok"] and not ocodes.any()
    lib_codes = torch.round(lib[0] / grid.scale[:, torch.arange(200) // 128]) + grid.zero[:, torch.arange(200) // 128]
    assert torch.equal(codes.float(), lib_codes)
    torch.testing.assert_close(ours, lib[0], rtol=0, atol=1e-7)


def test_qmc_gptq_pipeline_equals_llm_compressor_gptq_without_outliers(tiny_lm):
    """The whole block-by-block pipeline (inputs, Hessians, order, solver), run with rho = 0 on the
    library observer's min-max grid, gives llm-compressor's GPTQ codes exactly, layer for layer."""
    pytest.importorskip("llmcompressor")
    from qmc_edge.libraries.llmcompressor_adapter import from_library_model, run_oneshot
    from qmc_edge.quant.gptq_blocks import quantize_model_gptq
    from qmc_edge.quant.gptq_solver import gptq_round
    from qmc_edge.quant.qtensor import QuantizedTensor
    from qmc_edge.quant.uniform import UniformCodes

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    names, bits, g = target_weights(model), 3, 48
    calib = _tiny_calibration(tok)
    lib, _, _ = from_library_model(model, run_oneshot(copy.deepcopy(model), tok, "gptq", bits, g, calib), names, bits)

    def minmax_gptq(w, h):  # llm-compressor's min-max observer: range includes 0, fp32 scale, integer zero
        out, inf = w.shape
        n = -(-inf // g)
        wp = torch.nn.functional.pad(w, (0, n * g - inf)).reshape(out, n, g)
        lo, hi = wp.amin(2).clamp(max=0), wp.amax(2).clamp(min=0)
        scale = (hi - lo) / (2**bits - 1)
        grid = UniformCodes(torch.zeros(0), scale, torch.round(-lo / scale).clamp(0, 2**bits - 1), bits, g)
        grid.codes, _, info = gptq_round(w, h, grid)
        return QuantizedTensor(shape=(out, inf), inliers=grid), info

    # The pipeline hands over the modules that share one input together; each is rounded on its own here.
    ours, _ = quantize_model_gptq(model, names, lambda _names, ws, h: [minmax_gptq(w, h) for w in ws], calib.samples)
    for n in names:
        assert torch.equal(ours[n].inliers.scale, lib[n].inliers.scale), n
        assert torch.equal(ours[n].inliers.codes, lib[n].inliers.codes), n
