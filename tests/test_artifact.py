"""Packed artifacts: bit packing, export -> load round trip for every method family and bits/cell,
storage accounting on disk, atomic export, generation, HF interop and the CLI commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from qmc_edge.artifact import MANIFEST_NAME
from qmc_edge.artifact.export import export_artifact
from qmc_edge.artifact.generate import GenerationSettings, generate_text
from qmc_edge.artifact.hf_export import export_hf
from qmc_edge.artifact.load import ArtifactModel, load_artifact, read_artifact, verify_artifact
from qmc_edge.artifact.pack import pack_bits, packed_nbytes, unpack_bits
from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.model.loading import load_model

# Every method family; ReRAM methods at 1, 2 and 3 bits per cell (with codes that need 1-3 cells,
# including partial last cells); MRAM bit flips; quantized tied embeddings; no outliers (rho=0).
METHODS = [
    "rtn4",
    "rtn:bits=3,group_size=0",
    "rtn:bits=8,group_size=32",
    "mxint4",
    "emem:bits=3,cell_bits=3",
    "emem:bits=4,cell_bits=2",
    "emem:bits=2,cell_bits=1",
    "qmc:bits=3,cell_bits=3",
    "qmc:bits=3,cell_bits=2",
    "qmc:bits=3,cell_bits=1",
    "qmc:bits=2,cell_bits=2",
    "qmc:bits=2,cell_bits=3,mram_ber=0.01",
    "qmc:bits=3,cell_bits=3,level_map=true,target_age=1d,age=1d",
    "qmc:bits=4,cell_bits=3,rho=0,quantize_embeddings=true",
    "qmc:bits=3,cell_bits=3,outlier_code=offset,outlier_bits=4,mram_ber=0.01",
    "qmc:bits=3,cell_bits=3,read_share=0.5,age=1h",
]


@given(
    width=st.integers(1, 16),
    data=st.data(),
)
def test_pack_round_trip(width, data):
    vals = data.draw(st.lists(st.integers(0, 2**width - 1), max_size=70))
    buf = pack_bits(np.array(vals, dtype=np.int64), width)
    assert buf.dtype == np.uint8 and buf.size == packed_nbytes(len(vals), width)
    assert unpack_bits(buf, width, len(vals)).tolist() == vals


def test_pack_layout_is_msb_first_and_rejects_bad_input():
    assert pack_bits(np.array([1, 2, 3]), 3).tolist() == [0b00101001, 0b10000000]
    with pytest.raises(ValueError, match="in \\[0, 2\\*\\*3\\)"):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError, match="expected 2"):
        unpack_bits(np.zeros(3, dtype=np.uint8), 3, 3)
    with pytest.raises(ValueError, match="padding"):
        unpack_bits(np.array([0, 1], dtype=np.uint8), 3, 3)


def _dense_fp16(model: torch.nn.Module, quantized: set[str]) -> None:
    """What the default dense_dtype=float16 does to the unquantized tensors of ``model``."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n not in quantized:
                p.copy_(p.to(torch.float16).to(p.dtype))


def _export(lm, method: str, out: Path, **kw):
    spec = parse_method(method)
    qm = quantize_model(lm.model, spec)
    res = export_artifact(lm, spec, qm, out, **kw)
    return spec, qm, res


@pytest.mark.parametrize("method", METHODS)
def test_round_trip_bit_exact(tiny_lm, tmp_path, method):
    spec, qm, res = _export(tiny_lm, method, tmp_path / "art")
    art = load_artifact(tmp_path / "art")
    loaded = dict(art.model.named_parameters(remove_duplicate=False))
    for name, qt in qm.tensors.items():
        got = art.quantized.tensors[name]
        assert torch.equal(got.inliers.codes, qt.inliers.codes) and got.inliers.codes.dtype == torch.uint8
        assert torch.equal(got.inliers.scale, qt.inliers.scale) and torch.equal(got.inliers.zero, qt.inliers.zero)
        if qt.outliers is not None:
            assert torch.equal(got.outliers.index, qt.outliers.index)
            assert torch.equal(got.outliers.codes, qt.outliers.codes) and got.outliers.scale == qt.outliers.scale
            assert got.outliers.offset == qt.outliers.offset
        assert (got.level_map is None) == (qt.level_map is None)
        if qt.level_map is not None:
            assert torch.equal(got.level_map, qt.level_map)
        assert torch.equal(loaded[name], qt.dequantize()), name
    if "level_map=true" in method:
        assert any(qt.level_map is not None for qt in qm.tensors.values()), "no tensor took a level map"
    # A noise realisation for a seed is the in-memory one, bit for bit; restore() undoes it.
    _dense_fp16(tiny_lm.model, set(qm.tensors))
    qm.realise(tiny_lm.model, 7)
    art.realise(7)
    ref = dict(tiny_lm.model.named_parameters(remove_duplicate=False))
    for name, p in ref.items():
        assert torch.equal(loaded[name], p), name
    ids = torch.tensor([[1, 5, 9, 13, 4, 7]])
    with torch.no_grad():
        assert torch.equal(art.model(ids).logits, tiny_lm.model(ids).logits)
    if spec.noisy and (spec.cell_bits == 3 or spec.mram().ber > 0):  # 2-bit cells: ~1e-8 errors per read
        clean = {n: qt.dequantize() for n, qt in qm.tensors.items()}
        assert any(not torch.equal(loaded[n], clean[n]) for n in clean), "seed 7 drew no read error"
    art.realise(None)
    assert all(torch.equal(loaded[n], qt.dequantize()) for n, qt in qm.tensors.items())


def test_fp_artifact_and_float32_dense_are_exact(tiny_lm, tmp_path):
    ref = {n: p.detach().clone() for n, p in tiny_lm.model.named_parameters()}
    _, qm, res = _export(tiny_lm, "fp", tmp_path / "fp32", dense_dtype="float32")
    assert qm is None and res.manifest.dense_exact and not res.manifest.tensors
    art = load_artifact(tmp_path / "fp32")
    assert art.quantized is None
    for n, p in art.model.named_parameters():
        assert torch.equal(p, ref[n]), n
    _, _, res16 = _export(tiny_lm, "fp", tmp_path / "fp16")
    assert not res16.manifest.dense_exact  # random fp32 init is not fp16-representable: said so
    assert "rounded from float32" in load_artifact(tmp_path / "fp16").note


def test_real_valued_zero_points_and_overrides(tiny_lm, tmp_path):
    """Zero points that are not integers (HQQ keeps them in floating point) are stored exactly, and
    unquantized parameters a method changed (AWQ folds scales into norms) are exported as changed."""
    spec = parse_method("rtn4")
    qm = quantize_model(tiny_lm.model, spec)
    for i, qt in enumerate(qm.tensors.values()):
        qt.zero_bits = 16
        qt.inliers.zero = qt.inliers.zero + (0.5 if i % 2 else 0.123456789)  # fp16-exact or not
    qm.overrides = {"model.norm.weight": torch.full_like(tiny_lm.model.model.norm.weight, 1.5)}
    res = export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    assert {e.zero_encoding for e in res.manifest.tensors} == {"float16", "float32"}
    art = load_artifact(tmp_path / "a")
    loaded = dict(art.model.named_parameters())
    for name, qt in qm.tensors.items():
        assert torch.equal(art.quantized.tensors[name].inliers.zero, qt.inliers.zero)
        assert torch.equal(loaded[name], qt.dequantize())
    assert torch.equal(loaded["model.norm.weight"], qm.overrides["model.norm.weight"])


def _data_bytes(path: Path) -> tuple[int, int]:
    """(tensor payload bytes, number of arrays) over the tensor files of an artifact."""
    from safetensors import safe_open

    total = arrays = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st_:
            for k in st_.keys():
                t = st_.get_tensor(k)
                total += t.numel() * t.element_size()
                arrays += 1
    return total, arrays


@pytest.mark.parametrize(
    "method", ["rtn4", "mxint4", "emem:bits=3,cell_bits=2", "qmc3", "qmc2", "qmc:level_map=true,target_age=1d"]
)
def test_bytes_on_disk_match_storage_report(tiny_lm, tmp_path, method):
    """Payload = report bits / 8, up to one padding byte per array and two documented excesses:
    fp32 scales where the in-memory scales are not fp16-exact, and a float64 outlier scale."""
    spec, qm, res = _export(tiny_lm, method, tmp_path / "a")
    rep = storage_report(tiny_lm.model, spec, qm)
    payload, arrays = _data_bytes(tmp_path / "a")
    m = res.manifest
    excess = sum(2 * e.shape[0] * e.n_groups for e in m.tensors if e.scale_encoding == "float32")
    excess += sum(6 for e in m.tensors if e.outliers is not None)  # 8-byte float64 vs 16 bits counted
    extra = payload - excess - rep["model_MB"] * 1e6
    assert 0 <= extra < arrays
    assert m.packed_bytes == sum(p.stat().st_size for p in (tmp_path / "a").glob("*.safetensors"))
    if method == "mxint4":
        assert {e.scale_encoding for e in m.tensors} == {"e8m0"}


def test_reram_image_holds_cell_levels(tiny_lm, tmp_path):
    """The ReRAM file is the cell image: for 3-bit codes in 2-bit cells, 2 cells per code, the second
    holding one bit left-aligned (levels 0 or 2)."""
    from safetensors.torch import load_file

    _, qm, _ = _export(tiny_lm, "qmc:bits=3,cell_bits=2", tmp_path / "a")
    name, qt = next(iter(qm.tensors.items()))
    img = load_file(str(tmp_path / "a" / "reram.safetensors"))[name].numpy()
    levels = unpack_bits(img, 2, qt.numel * 2).reshape(-1, 2)
    codes = qt.inliers.codes.reshape(-1).numpy().astype(np.int64)
    assert (levels[:, 0] == codes >> 1).all() and (levels[:, 1] == (codes & 1) << 1).all()


def test_load_model_resolves_artifacts(tiny_lm, tmp_path):
    _export(tiny_lm, "qmc3", tmp_path / "a")
    lm = load_model(str(tmp_path / "a"))
    assert isinstance(lm, ArtifactModel) and lm.quantized is not None and lm.tokenizer is not None
    assert lm.manifest.method["method"] == "qmc" and "QMC artifact" in lm.note
    s = verify_artifact(tmp_path / "a")
    assert s["quantized_tensors"] == len(lm.quantized.tensors) and s["format"].endswith("v2")


def test_export_refuses_to_overwrite(tiny_lm, tmp_path):
    spec = parse_method("rtn4")
    qm = quantize_model(tiny_lm.model, spec)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(QMCError, match="is not a qmc artifact"):
        export_artifact(tiny_lm, spec, qm, other)
    assert (other / "keep.txt").read_text() == "mine"
    export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    with pytest.raises(QMCError, match="--force"):
        export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    qspec = parse_method("qmc2")
    export_artifact(tiny_lm, qspec, quantize_model(tiny_lm.model, qspec), tmp_path / "a", force=True)
    assert read_artifact(tmp_path / "a").spec == qspec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "notes"]  # no temp dirs left


def test_generation_greedy_and_seeded_sampling(tiny_lm, tmp_path):
    _export(tiny_lm, "qmc3", tmp_path / "a")
    art = load_artifact(tmp_path / "a", noise_seed=1)
    assert art.noise_seed == 1
    greedy = GenerationSettings(max_new_tokens=12)
    a = generate_text(art.model, art.tokenizer, "the w1 of", greedy)
    pieces: list[str] = []
    b = generate_text(art.model, art.tokenizer, "the w1 of", greedy, pieces.append)
    assert a.text == b.text and a.new_tokens == 12
    assert "".join(pieces).split() == b.text.split()  # streamed as it was produced
    rng = torch.random.get_rng_state()
    s = [
        generate_text(art.model, art.tokenizer, "a w3", GenerationSettings(12, sample=True, seed=k)) for k in (5, 5, 6)
    ]
    assert torch.equal(rng, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert s[0].text == s[1].text and s[0].text != s[2].text
    with pytest.raises(QMCError, match="max-new-tokens"):
        generate_text(art.model, art.tokenizer, "a", GenerationSettings(max_new_tokens=0))
    with pytest.raises(QMCError, match="context"):
        generate_text(art.model, art.tokenizer, "a", GenerationSettings(max_new_tokens=500))


def test_hf_export_loads_back_with_same_logits(tiny_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    _export(tiny_lm, "qmc2", tmp_path / "a")
    art = load_artifact(tmp_path / "a", noise_seed=3)
    export_hf(art.model, art.tokenizer, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[1, 8, 20, 3, 44]])
    with torch.no_grad():
        assert torch.equal(hf(ids).logits, art.model(ids).logits)
    with pytest.raises(QMCError, match="--force"):
        export_hf(art.model, art.tokenizer, tmp_path / "hf")
    with pytest.raises(QMCError, match="not an HF checkpoint"):
        export_hf(art.model, art.tokenizer, tmp_path / "a", force=True)


# --- CLI -------------------------------------------------------------------------------------


def _run(*args):
    from qmc_edge.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_export_verify_generate_export_hf(tiny_model_dir, tmp_path):
    art, j = tmp_path / "art", tmp_path / "e.json"
    r = _run("export", "--model", tiny_model_dir, "-m", "qmc3", "-o", art, "--json", j)
    assert r.exit_code == 0, r.output
    payload = json.loads(j.read_text())
    assert payload["method"].startswith("QMC 3b") and payload["packed_MB"] > 0
    r = _run("verify", art, "--json", tmp_path / "v.json")
    assert r.exit_code == 0 and "OK:" in r.output
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True
    r = _run("generate", "--model", art, "-p", "the w1 of", "--max-new-tokens", "5", "--noise-seed", "2",
             "--json", tmp_path / "g.json")  # fmt: skip
    assert r.exit_code == 0, r.output
    g = json.loads((tmp_path / "g.json").read_text())
    assert g["read"] == "noise seed 2" and g["results"][0]["new_tokens"] == 5
    assert g["results"][0]["text"].strip() in r.output.replace("\n", " ")
    r = _run("generate", "--model", tiny_model_dir, "-m", "rtn4", "-p", "a w3", "--max-new-tokens", "3", "--sample")
    assert r.exit_code == 0, r.output
    r = _run("export-hf", "--model", art, "--noise-seed", "1", "-o", tmp_path / "hf")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "hf" / "config.json").is_file() and "noise seed 1" in r.output


def test_cli_errors_are_one_line(tiny_model_dir, tmp_path):
    art = tmp_path / "art"
    assert _run("export", "--model", tiny_model_dir, "-m", "rtn4", "-o", art).exit_code == 0
    r = _run("export", "--model", tiny_model_dir, "-m", "rtn4", "-o", art)
    assert r.exit_code == 2 and "--force" in r.output
    r = _run("export", "--model", tiny_model_dir, "-m", "rtn4", "-o", art, "--dense-dtype", "int3")
    assert r.exit_code == 2 and "dense-dtype" in r.output
    with open(art / "codes.safetensors", "r+b") as f:
        f.seek(os.path.getsize(art / "codes.safetensors") // 2)
        f.write(b"\x00\x01")
    for args in (("verify", art), ("generate", "--model", art, "-p", "x")):
        r = _run(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.output.startswith("error:") and "codes.safetensors" in r.output.replace("\n", "")
    r = _run("generate", "--model", tiny_model_dir, "-p", "x", "--top-p", "2")
    assert r.exit_code == 2 and "top-p" in r.output


def test_evaluating_an_artifact_reads_its_noisy_cells_per_seed(tiny_lm, tmp_path):
    """`qmc ppl --model ARTIFACT --seeds N` evaluates N device-noise reads of the stored cells, not
    the noise-free dequantization, and leaves the model noise-free afterwards."""
    from qmc_edge.model.perplexity import perplexity
    from qmc_edge.model.runner import EvalSettings, run_method

    spec, qm, _ = _export(tiny_lm, "emem:bits=3,cell_bits=3", tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    ids = torch.randint(3, len(art.tokenizer), (200,), generator=torch.Generator().manual_seed(0))
    row = run_method(art, parse_method("fp"), ids, EvalSettings(context=64, seeds=(0, 1)))
    assert row["method"] == spec.name and row["noisy"] and row["seeds"] == [0, 1]
    assert row["effective_bits"] == art.manifest.storage_report["effective_bits"] < 16
    expected = []
    for s in (0, 1):
        art.realise(s)
        expected.append(perplexity(art.model, ids, 64).ppl)
    art.realise(None)
    assert row["ppl_per_seed"] == pytest.approx(expected, rel=1e-6)
    assert expected[0] != expected[1]
    clean = perplexity(art.model, ids, 64).ppl
    assert clean not in row["ppl_per_seed"]
    params = dict(art.model.named_parameters(remove_duplicate=False))
    assert all(torch.equal(params[n], qt.dequantize()) for n, qt in qm.tensors.items())


def test_a_huge_manifest_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """The manifest's size is checked before it is read: a 500 MB file is not parsed into memory."""
    import qmc_edge.artifact.decode as dec

    art = tmp_path / "art"
    art.mkdir()
    with open(art / MANIFEST_NAME, "wb") as f:
        f.truncate(dec.MAX_MANIFEST_BYTES + 1)  # sparse: no disk used
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the huge manifest was read"))
    with pytest.raises(QMCError, match="larger than 64 MiB"):
        dec.read_manifest(art)


def test_a_listed_file_replaced_by_a_link_to_an_identical_copy_is_refused(tiny_lm, tmp_path):
    """The link's target can change after verify without the folder changing: a link is not the
    artifact's own file, even when what it points to is byte for byte the listed file."""
    import shutil

    _export(tiny_lm, "rtn4", tmp_path / "art")
    f = tmp_path / "art" / "codes.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(f, outside)
    f.unlink()
    f.symlink_to(outside)
    with pytest.raises(QMCError, match="codes.safetensors.*is a link"):
        verify_artifact(tmp_path / "art")
    with pytest.raises(QMCError, match="is a link"):
        load_artifact(tmp_path / "art")
