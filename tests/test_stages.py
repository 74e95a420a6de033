"""QMC as a pipeline of stages: a stage registered from outside the package composes with the built-in
ones, through quantization, storage, device noise and artifact export, with no branch added."""

from __future__ import annotations

import pytest
import torch
from test_gptq import _calib

from qmc_edge.artifact.export import export_artifact
from qmc_edge.artifact.load import load_artifact
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.quant.stages.kinds import KINDS, register_stage, stage_class, stage_names, unregister_stage
from qmc_edge.quant.stages.outliers import OutlierSelection, outlier_positions
from qmc_edge.quant.stages.pipeline import run_stages


class ByValue(OutlierSelection):
    """A toy rule: the largest *signed* weights are the outliers (the most positive ones)."""

    def scores(self, w, sensitivity):
        return w.detach().float().clone()


@pytest.fixture
def toy_stage():
    register_stage("outliers", "toy_by_value")(ByValue)
    try:
        yield "toy_by_value"
    finally:
        unregister_stage("outliers", "toy_by_value")


def test_registry_lists_kinds_and_refuses_unknown_and_duplicate_names(toy_stage):
    assert KINDS == ("config", "rounding", "outliers", "grid", "levels")
    assert stage_names("outliers") == ["magnitude", "fisher", "toy_by_value"]
    assert stage_class("outliers", toy_stage) is ByValue
    with pytest.raises(ValueError, match="unknown outliers stage 'nope'; use one of: magnitude, fisher, toy"):
        stage_class("outliers", "nope")
    with pytest.raises(ValueError, match="already registered"):
        register_stage("outliers", "magnitude")(ByValue)
    with pytest.raises(ValueError, match="unknown stage kind"):
        register_stage("decoder", "x")
    with pytest.raises(ValueError, match="bad method 'qmc3:outliers_by=nope': outliers_by: unknown outliers stage"):
        parse_method("qmc3:outliers_by=nope")


def test_built_in_options_name_their_stages():
    assert parse_method("qmc3").stages() == {
        "config": "fixed",
        "rounding": "nearest",
        "outliers": "magnitude",
        "grid": "uniform",
        "levels": "identity",
    }
    s = parse_method("qmc:budget=3,rounding=gptq,outliers_by=fisher,level_map=true").stages()
    assert (s["config"], s["rounding"], s["outliers"], s["levels"]) == ("budget", "gptq", "fisher", "best")


def test_a_toy_stage_runs_through_quantize_storage_noise_and_export(tiny_lm, tmp_path, toy_stage):
    spec = parse_method(f"qmc3:outliers_by={toy_stage},rho=0.02")
    assert "outliers_by=toy_by_value" in spec.name
    params = dict(tiny_lm.model.named_parameters(remove_duplicate=False))
    qm = quantize_model(tiny_lm.model, spec)
    plain = quantize_model(tiny_lm.model, parse_method("qmc3:rho=0.02"))
    for name, qt in qm.tensors.items():
        w = params[name].detach().float()
        # exactly the toy rule's choice, which is not the magnitude rule's
        assert torch.equal(qt.outliers.index, outlier_positions(w, 0.02, w))
        assert (w.reshape(-1)[qt.outliers.index] > 0).all()
    assert any(not torch.equal(qt.outliers.index, plain.tensors[n].outliers.index) for n, qt in qm.tensors.items())
    # storage: the same share of outliers costs the same bits as the magnitude split
    rep, ref = storage_report(tiny_lm.model, spec, qm), storage_report(tiny_lm.model, plain.spec, plain)
    assert rep["bits_by_memory"] == ref["bits_by_memory"] and rep["outliers"] == ref["outliers"] > 0
    # noise: chip 3 reads differently from the stored codes, the same way twice
    qm.realise(tiny_lm.model, 3)
    noisy = {n: params[n].detach().clone() for n in qm.tensors}
    qm.realise(tiny_lm.model, 3)
    assert all(torch.equal(params[n], noisy[n]) for n in qm.tensors)
    assert any(not torch.equal(noisy[n], qt.dequantize()) for n, qt in qm.tensors.items())
    qm.restore(tiny_lm.model)
    # export and load: the same tensors, and the same noisy read of chip 3 bit for bit
    export_artifact(tiny_lm, spec, qm, tmp_path / "art")
    art = load_artifact(tmp_path / "art")
    assert art.quantized.spec == spec
    for name, qt in qm.tensors.items():
        got = art.quantized.tensors[name]
        assert torch.equal(got.outliers.index, qt.outliers.index) and torch.equal(got.inliers.codes, qt.inliers.codes)
    art.realise(3)
    loaded = dict(art.model.named_parameters(remove_duplicate=False))
    assert all(torch.equal(loaded[n], noisy[n]) for n in qm.tensors)


def test_a_toy_stage_composes_with_gptq_rounding_and_the_budget(tiny_lm, toy_stage):
    """The toy outliers under GPTQ rounding, then under a budget: no new branch, the same split."""
    names = [n for n in dict(tiny_lm.model.named_parameters()) if n.endswith("proj.weight")]
    params = dict(tiny_lm.model.named_parameters(remove_duplicate=False))
    spec = parse_method(f"qmc3-gptq:outliers_by={toy_stage},rho=0.02,group_size=32")
    qm = run_stages(spec, tiny_lm.model, names, tiny_lm.tokenizer, None, _calib(tiny_lm.tokenizer))
    near = run_stages(parse_method(f"qmc3:outliers_by={toy_stage},rho=0.02,group_size=32"), tiny_lm.model, names)
    for name, qt in qm.tensors.items():
        w = params[name].detach().float()
        assert torch.equal(qt.outliers.index, outlier_positions(w, 0.02, w))
        assert torch.equal(qt.inliers.scale, near.tensors[name].inliers.scale)  # GPTQ keeps the grid
    assert any(not torch.equal(qt.inliers.codes, near.tensors[n].inliers.codes) for n, qt in qm.tensors.items())
    budget = parse_method(f"qmc:budget=4,outliers_by={toy_stage},sensitivity=uniform")
    assert budget.stages()["config"] == "budget"
    qb = quantize_model(tiny_lm.model, budget, tokenizer=tiny_lm.tokenizer)
    chosen = qb.info["budget"]["configs"]
    for name, qt in qb.tensors.items():
        rho = float(chosen[name].split("rho=")[1])
        w = params[name].detach().float()
        assert torch.equal(qt.outliers.index, outlier_positions(w, rho, w)), name
    assert qb.info["budget"]["reached"] <= 4
