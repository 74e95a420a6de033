"""Device options as method options: MRAM faults and ECC for every method that keeps bits in MRAM,
and the options reaching storage, noise and artifacts."""

from __future__ import annotations

import pytest
import torch

from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report


def _read(model, qm, seed):
    qm.realise(model, seed)
    out = {n: p.detach().clone() for n, p in model.named_parameters() if n in qm.tensors}
    qm.restore(model)
    return out


def test_emem_scales_in_mram_now_see_faults(tiny_model):
    clean = parse_method("emem:bits=4,cell_bits=2")  # 2-bit cells: ~1e-8 ReRAM errors, so faults are MRAM's
    faulty = parse_method("emem:bits=4,cell_bits=2,mram_ber=0.01")
    assert faulty.noisy and faulty.name.endswith("mram_ber=0.01")
    qa, qb = quantize_model(tiny_model, clean), quantize_model(tiny_model, faulty)
    assert all(torch.equal(qa.tensors[n].inliers.codes, qb.tensors[n].inliers.codes) for n in qa.tensors)
    a, b = _read(tiny_model, qa, 0), _read(tiny_model, qb, 0)
    changed = sum(int((a[n] != b[n]).sum()) for n in a)
    total = sum(t.numel() for t in a.values())
    # A flipped scale or zero point moves a whole group of 128 weights: many weights change.
    assert changed > 0.05 * total


def test_secded_corrects_most_faults_and_is_billed(tiny_model):
    plain = parse_method("qmc:bits=3,cell_bits=2,mram_ber=0.002")
    ecc = parse_method("qmc:bits=3,cell_bits=2,mram_ber=0.002,mram_ecc=secded")
    qp, qe = quantize_model(tiny_model, plain), quantize_model(tiny_model, ecc)
    rp, re_ = storage_report(tiny_model, plain, qp), storage_report(tiny_model, ecc, qe)
    assert "ecc_check_bits" not in rp["bits_by_component"]
    check = re_["bits_by_component"]["ecc_check_bits"]
    mram_data = rp["bits_by_memory"]["mram"]
    assert mram_data / 8 <= check <= mram_data / 8 + 8 * 6 * len(qe.tensors)  # 8 per 64 bits, rounded up per field
    assert re_["bits_by_memory"]["mram"] == mram_data + check
    ref = {n: qt.dequantize() for n, qt in qp.tensors.items()}
    err = {}
    for name, qm in (("plain", qp), ("ecc", qe)):
        r = _read(tiny_model, qm, 1)
        err[name] = sum(int((r[n] != ref[n]).sum()) for n in r)
    assert err["ecc"] < 0.1 * err["plain"] and err["plain"] > 0


def test_mram_ecc_round_trips_through_an_artifact(tiny_lm, tmp_path):
    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.artifact.load import load_artifact

    spec = parse_method("emem:bits=3,cell_bits=3,mram_ber=0.001,mram_ecc=secded")
    qm = quantize_model(tiny_lm.model, spec)
    export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    back = load_artifact(tmp_path / "a")
    assert back.quantized.spec == spec
    assert all(t.mram_ecc == "secded" for t in back.quantized.tensors.values())
    a = _read(tiny_lm.model, qm, 4)
    back.realise(4)
    params = dict(back.model.named_parameters())
    assert all(torch.equal(params[n], a[n]) for n in a)


def test_age_changes_the_reads_not_the_codes_and_target_age_the_codes(tiny_model):
    fresh = parse_method("qmc:bits=3,cell_bits=3")
    aged = parse_method("qmc:bits=3,cell_bits=3,age=1d")
    targeted = parse_method("qmc:bits=3,cell_bits=3,age=1d,target_age=1d")
    qf, qa, qt = (quantize_model(tiny_model, s) for s in (fresh, aged, targeted))
    names = list(qf.tensors)
    assert all(torch.equal(qf.tensors[n].inliers.codes, qa.tensors[n].inliers.codes) for n in names)
    assert any(not torch.equal(qf.tensors[n].inliers.scale, qt.tensors[n].inliers.scale) for n in names)
    ref = {n: qf.tensors[n].dequantize() for n in names}
    err = {}
    for label, qm in (("fresh", qf), ("aged", qa), ("targeted", qt)):
        r = _read(tiny_model, qm, 2)
        err[label] = sum(float(((r[n] - ref[n]) ** 2).sum()) for n in names)
    assert err["aged"] > 2 * err["fresh"]  # the extrapolated 1-day relaxation costs far more than fresh reads
    assert aged.cells().describe()["age_extrapolated"] and not fresh.cells().describe()["age_extrapolated"]


def test_noise_scale_and_write_verify_move_the_error_rate():
    base = parse_method("emem:bits=3,cell_bits=3").cells().describe()["mean_cell_error_rate"]
    worse = parse_method("emem:bits=3,cell_bits=3,noise_scale=2").cells().describe()["mean_cell_error_rate"]
    better = parse_method("emem:bits=3,cell_bits=3,write_verify=true").cells().describe()["mean_cell_error_rate"]
    assert worse > 5 * base and better < base / 100


def test_spread_cells_lower_the_code_errors_and_round_trip(tiny_lm, tmp_path):
    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.artifact.load import load_artifact
    from qmc_edge.memory.cells import code_transition_matrix

    left = parse_method("qmc:bits=2,cell_bits=3")
    spread = parse_method("qmc:bits=2,cell_bits=3,cell_layout=spread")
    dev = left.cells()
    p_left = code_transition_matrix(2, dev, "left", None)
    p_spread = code_transition_matrix(2, dev, "spread", None)
    err = [1 - float(p.diagonal().mean()) for p in (p_left, p_spread)]
    assert err[1] < err[0] / 4  # 2.9e-3 -> 6.1e-4 with the even spread (0, 2, 5, 7) and nearest-level decoding
    qm = quantize_model(tiny_lm.model, spread)
    assert all(t.cell_layout == "spread" for t in qm.tensors.values())
    export_artifact(tiny_lm, spread, qm, tmp_path / "s")
    back = load_artifact(tmp_path / "s")
    assert all(torch.equal(back.quantized.tensors[n].inliers.codes, qm.tensors[n].inliers.codes) for n in qm.tensors)
    a = _read(tiny_lm.model, qm, 3)
    back.realise(3)
    params = dict(back.model.named_parameters())
    assert all(torch.equal(params[n], a[n]) for n in a)


def test_options_that_would_do_nothing_are_refused():
    import pytest

    for text, needle in [
        ("qmc:bits=3,cell_bits=3,cell_layout=spread", "does not divide"),
        ("qmc3:read_reference=aged", "with an age"),
        ("qmc3:noise_aware=false,target_age=1d", "noise-aware"),
        ("hqq3:age=1d", "reram=true"),
        ("qmc3:age=soon", "not a time"),
    ]:
        with pytest.raises(ValueError, match=needle):
            parse_method(text)


def test_qmc_cells_lists_the_shipped_cell_models_and_the_old_name_points_to_it():
    from typer.testing import CliRunner

    from qmc_edge.cli.app import app

    res = CliRunner().invoke(app, ["cells"])
    assert res.exit_code == 0, res.output
    assert "nvmexplorer_rram" in res.output and "ibm_cmo_hfox" in res.output
    old = CliRunner().invoke(app, ["devices"])
    assert old.exit_code == 2 and "is now `qmc cells`" in old.output and "Traceback" not in old.output


def test_the_old_option_name_points_to_the_new_one_and_stored_specs_still_read():
    from qmc_edge.methods import spec_from_dict

    with pytest.raises(
        ValueError, match="'reram_device' in 'qmc3:reram_device=ibm_cmo_hfox' is now called 'cell_model'"
    ):
        parse_method("qmc3:reram_device=ibm_cmo_hfox")
    stored = {**parse_method("qmc3").model_dump(), "reram_device": "ibm_cmo_hfox"}
    stored.pop("cell_model")
    assert spec_from_dict(stored) == parse_method("qmc3:cell_model=ibm_cmo_hfox")
