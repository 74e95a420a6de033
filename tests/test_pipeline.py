"""The whole pipeline on a tiny random Llama: model quantization, noise realisation, storage report,
perplexity against a direct computation, and the CLI (outputs, errors, nothing half-written)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.loaded import bos_for
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report, target_weights
from qmc_edge.model.perplexity import perplexity, tokenize

runner = CliRunner()


def test_target_weights_are_the_decoder_linears(tiny_model):
    names = target_weights(tiny_model)
    assert len(names) == LAYERS * 7
    assert all(n.startswith("model.layers.") and n.endswith(".weight") for n in names)
    with_emb = target_weights(tiny_model, include_embeddings=True)
    assert len(with_emb) == LAYERS * 7 + 1  # tied head: counted once
    assert "model.embed_tokens.weight" in with_emb


def test_quantize_realise_restore(tiny_model):
    """Quantizing leaves the model as it is and keeps no copy of it; each read writes one chip into the
    quantized tensors only (the same chip twice the same way), keeping a copy of each original the
    first time it is overwritten; restore() brings the originals back after any number of reads. (That
    GPU-held models read the same as CPU ones is benchmarks/gpu_check.py's, on a lent GPU.)"""
    ref = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    spec = parse_method("qmc3")
    qm = quantize_model(tiny_model, spec)
    # quantize_model leaves the model unchanged, and copies nothing
    assert all(torch.equal(p, ref[n]) for n, p in tiny_model.named_parameters())
    assert qm.reference == {}
    qm.restore(tiny_model)  # nothing to undo yet
    qm.realise(tiny_model, seed=0)
    params = dict(tiny_model.named_parameters())
    assert set(qm.reference) == set(qm.tensors)
    assert all(
        ref_w.data_ptr() != params[n].data_ptr() and torch.equal(ref_w, ref[n]) for n, ref_w in qm.reference.items()
    )
    a = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    qm.realise(tiny_model, seed=0)
    assert all(torch.equal(p, a[n]) for n, p in tiny_model.named_parameters())
    qm.realise(tiny_model, seed=1)
    changed = [n for n, p in tiny_model.named_parameters() if not torch.equal(p, a[n])]
    assert set(changed) == set(qm.tensors)  # only quantized tensors, and noise differs per seed
    assert all(torch.equal(qm.reference[n], ref[n]) for n in qm.tensors)  # the originals, not the first read
    # Not quantized: norms and embeddings keep reference values.
    assert torch.equal(tiny_model.model.embed_tokens.weight, ref["model.embed_tokens.weight"])
    qm.restore(tiny_model)
    assert all(torch.equal(p, ref[n]) for n, p in tiny_model.named_parameters())


def test_storage_report_counts_the_whole_model(tiny_model):
    spec = parse_method("qmc3")
    qm = quantize_model(tiny_model, spec)
    rep = storage_report(tiny_model, spec, qm)
    per_layer = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * (HIDDEN // 4 * KV_HEADS) + 3 * HIDDEN * INTERMEDIATE
    assert rep["quantized_params"] == LAYERS * per_layer
    total = sum(p.numel() for p in tiny_model.parameters())  # tied weights count once
    assert rep["quantized_params"] + rep["unquantized_params"] == total
    q_bits = sum(rep["bits_by_component"].values())
    assert rep["effective_bits"] == pytest.approx(q_bits / rep["quantized_params"])
    assert 3.0 < rep["effective_bits"] < 4.0
    assert sum(v for k, v in rep["bits_by_memory"].items() if k != "unquantized_fp16_dram") == q_bits
    assert rep["compression_quantized_layers"] == pytest.approx(16 / rep["effective_bits"])
    assert 1 < rep["compression_whole_model"] < rep["compression_quantized_layers"]
    fp = storage_report(tiny_model, parse_method("fp"), None)
    assert fp["compression_whole_model"] == pytest.approx(1.0)
    emb = parse_method("qmc3:quantize_embeddings=true")
    rep_e = storage_report(tiny_model, emb, quantize_model(tiny_model, emb))
    assert rep_e["quantized_params"] > rep["quantized_params"]
    assert rep_e["compression_whole_model"] > rep["compression_whole_model"]


def test_perplexity_matches_direct_computation(tiny_lm, text_file):
    ids = tokenize(tiny_lm.tokenizer, text_file.read_text())
    bos = bos_for(tiny_lm.tokenizer)
    assert bos is not None  # the tiny tokenizer prepends <s>
    r = perplexity(tiny_lm.model, ids, context=32, max_windows=3, bos_id=bos)
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(3):
            inp = torch.cat([torch.tensor([bos]), ids[i * 31 : (i + 1) * 31]])
            logp = torch.log_softmax(tiny_lm.model(inp[None]).logits[0, :-1], -1)
            nll -= float(logp.gather(1, inp[1:, None]).sum())
            n += 31
    assert r.tokens_scored == n and r.windows == 3 and r.capped
    assert r.ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    # Without BOS the first token of each window is context only.
    r2 = perplexity(tiny_lm.model, ids, context=32, max_windows=2, bos_id=None)
    assert r2.tokens_scored == 2 * 31


def _json(path):
    return json.loads(path.read_text())


def test_cli_quantize_writes_report(tiny_model_dir, tmp_path):
    out = tmp_path / "q.json"
    res = runner.invoke(app, ["quantize", "--model", str(tiny_model_dir), "-m", "qmc2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = _json(out)
    assert d["spec"]["bits"] == 2 and d["spec"]["cell_bits"] == 2
    assert 2.0 < d["storage"]["effective_bits"] < 3.0
    assert "effective" in res.output.lower()


def test_cli_compare_and_ppl(tiny_model_dir, text_file, tmp_path):
    out = tmp_path / "c.json"
    args = ["compare", "--model", str(tiny_model_dir), "--text", str(text_file), "--context", "64"]
    args += ["--max-windows", "2", "--seeds", "2", "-m", "fp", "-m", "rtn4", "-m", "emem3", "-m", "qmc3"]
    res = runner.invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = _json(out)
    rows = {r["method"]: r for r in d["rows"]}
    assert len(rows) == 4 and d["capped"] and d["windows"] == 2
    fp = d["rows"][0]
    assert fp["effective_bits"] == 16.0 and fp["seeds"] == []
    noisy = [r for r in d["rows"] if r["noisy"]]
    assert len(noisy) == 2 and all(len(r["ppl_per_seed"]) == 2 for r in noisy)
    assert all(math.isfinite(r["ppl_mean"]) and r["ppl_mean"] > 1 for r in d["rows"])
    assert "capped" in res.output
    # Same seeds, same numbers.
    out2 = tmp_path / "c2.json"
    res = runner.invoke(app, [*args, "--json", str(out2)])
    assert [r["ppl_per_seed"] for r in _json(out2)["rows"]] == [r["ppl_per_seed"] for r in d["rows"]]
    # ppl: one method over seeds
    out3 = tmp_path / "p.json"
    res = runner.invoke(
        app,
        ["ppl", "--model", str(tiny_model_dir), "--text", str(text_file), "--context", "64", "--max-windows", "2"]
        + ["-m", "qmc3", "--seeds", "2", "--json", str(out3)],
    )
    assert res.exit_code == 0, res.output
    assert _json(out3)["rows"][0]["ppl_per_seed"] == rows[parse_method("qmc3").name]["ppl_per_seed"]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--model", "/nonexistent/model"], "not found"),
        (["--text", "/nonexistent/text.txt"], "text"),
        (["-m", "qmc:rho=0.7"], "rho"),
        (["-m", "qmc:bits=5"], "bits"),
        (["--context", "100000"], "longer than the model allows"),
        (["--seeds", "0"], "seeds"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, text_file, tmp_path, extra, needle):
    out = tmp_path / "never.json"
    base = ["ppl", "--model", str(tiny_model_dir), "--text", str(text_file), "--context", "64", "--max-windows", "1"]
    res = runner.invoke(app, [*base, *extra, "--json", str(out)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_cli_unreadable_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    res = runner.invoke(app, ["quantize", "--model", str(bad)])
    assert res.exit_code == 2
    assert "error:" in res.output and "broken.gguf" in res.output and "Traceback" not in res.output


def test_cli_unwritable_json_fails_before_work(tiny_model_dir, tmp_path, monkeypatch):
    """The output path is checked before the model is even loaded: no work is wasted on a run whose
    result could not be written."""
    import qmc_edge.cli.app as cli_app

    work: list[str] = []
    monkeypatch.setattr(cli_app, "load", lambda *a, **k: work.append("load"))
    monkeypatch.setattr(cli_app, "quantize_model", lambda *a, **k: work.append("quantize"))
    target = tmp_path / "no" / "such" / "dir" / "x.json"
    res = runner.invoke(app, ["quantize", "--model", str(tiny_model_dir), "--json", str(target)])
    assert res.exit_code == 2 and "error:" in res.output and "x.json" in res.output and "Traceback" not in res.output
    assert work == [] and not target.parent.exists()


def test_cli_methods_lists_presets():
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0 and "qmc3" in res.output and "mxint4" in res.output


def test_demo_headline_on_tiny_model(tiny_lm, text_file):
    """The demo's deployment table: built from the compare rows' storage reports, FP16 on orin_agx = 1."""
    from qmc_edge.cli.app import _demo_headline
    from qmc_edge.model.runner import EvalSettings, run_method

    ids = tokenize(tiny_lm.tokenizer, text_file.read_text())
    cfg = EvalSettings(context=32, max_windows=1, seeds=(0,), bos_id=bos_for(tiny_lm.tokenizer))
    rows = [run_method(tiny_lm, parse_method(m), ids, cfg) for m in ("fp", "rtn4", "qmc3")]
    head = _demo_headline(tiny_lm, rows)["deployment"]
    by = {(r["method"], r["platform"]): r for r in head}
    base = by[("FP16", "orin_agx")]
    assert base["ratio_memory"][1] == pytest.approx(1.0)
    q = by[(parse_method("qmc3").name, "qmc_hetero")]
    assert q["ratio_memory"][1] > by[(parse_method("rtn4").name, "orin_agx")]["ratio_memory"][1] > 1


@pytest.mark.parametrize(
    "device,message",
    [("cuda", "CUDA is not available"), ("nonsense", "unknown device"), ("meta", "only cpu and cuda")],
)
def test_device_option_fails_in_one_line(tiny_model_dir, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = runner.invoke(app, ["ppl", "--model", str(tiny_model_dir), "--device", device, "--max-windows", "1"])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_a_data_dir_that_does_not_exist_is_refused_not_ignored(monkeypatch, tmp_path):
    from qmc_edge.errors import QMCError
    from qmc_edge.model.perplexity import load_text

    monkeypatch.setenv("QMC_DATA_DIR", str(tmp_path / "nonexistent"))
    with pytest.raises(QMCError, match="QMC_DATA_DIR=.*nonexistent is not a folder"):
        load_text(None, allow_hub=False)
    res = runner.invoke(app, ["ppl", "--max-windows", "1"])
    assert res.exit_code == 2 and "QMC_DATA_DIR" in res.output and "Traceback" not in res.output
