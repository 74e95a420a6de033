"""The method registry: one class per method, validated options, labels that show every option that
changes a result, a method added from outside the package, and seeds with one meaning."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Literal

import pytest
import torch
from conftest import synthetic_text
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.loaded import bos_for
from qmc_edge.methods import (
    PRESETS,
    TensorMethod,
    method_class,
    options,
    parse_method,
    register,
    registered,
    spec_from_dict,
    unregister,
)
from qmc_edge.methods.options import RERAM_DEFAULTS
from qmc_edge.methods.whole_model import quantize_model, storage_report
from qmc_edge.model.perplexity import tokenize
from qmc_edge.quant.qmodel import QuantizedModel, seed_for
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.stages.kinds import stage_names
from qmc_edge.quant.uniform import quantize_uniform

runner = CliRunner()
BUILTIN = ("fp", "rtn", "mxint4", "emem", "qmc", "gptq", "awq", "hqq")


# ---------------------------------------------------------------- a method from outside the package
class Toy(TensorMethod):
    """Two-bit min-max codes per row (no groups), in ideal memory: small enough to check by hand."""

    method: Literal["toy"] = "toy"
    bits: int = 2

    summary = "toy: per-row min-max codes (registered by a test)"
    shown = frozenset({"bits"})

    def base_name(self) -> str:
        return f"TOY-{self.bits}"

    def quantize_tensor(self, w: torch.Tensor) -> QuantizedTensor:
        return QuantizedTensor(shape=tuple(w.shape), inliers=quantize_uniform(w, self.bits, 0))


@pytest.fixture
def toy():
    register(Toy)
    yield Toy
    unregister("toy")


def test_builtin_methods_are_registered():
    assert set(BUILTIN) <= set(registered())
    for name in BUILTIN:
        assert method_class(name).model_fields["method"].default == name


def test_a_toy_method_runs_through_compare_storage_and_export(toy, tiny_lm, tiny_model_dir, text_file, tmp_path):
    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.artifact.load import load_artifact
    from qmc_edge.model.runner import EvalSettings, run_method

    spec = parse_method("toy:bits=3")
    assert isinstance(spec, Toy) and spec.name == "TOY-3"
    qm = quantize_model(tiny_lm.model, spec)
    rep = storage_report(tiny_lm.model, spec, qm)
    # 3-bit codes plus one fp16 scale and one 3-bit zero point per row
    n = rep["quantized_params"]
    rows = sum(t.shape[0] for t in qm.tensors.values())
    assert rep["bits_by_component"] == {"codes": 3 * n, "scales": 16 * rows, "zero_points": 3 * rows}
    ids = tokenize(tiny_lm.tokenizer, text_file.read_text())
    row = run_method(tiny_lm, spec, ids, EvalSettings(32, 1, (0,), bos_for(tiny_lm.tokenizer)))
    assert row["method"] == "TOY-3" and row["bits"] == 3 and row["ppl_mean"] > 1 and not row["noisy"]
    art = tmp_path / "toy-art"
    export_artifact(tiny_lm, spec, qm, art)
    back = load_artifact(art)
    assert back.quantized.spec == spec
    for name, qt in qm.tensors.items():
        assert torch.equal(back.quantized.tensors[name].dequantize(), qt.dequantize())
    # ... and through the CLI, which lists it
    res = runner.invoke(app, ["methods"])
    assert res.exit_code == 0 and "toy" in res.output
    res = runner.invoke(
        app,
        ["compare", "--model", str(tiny_model_dir), "--text", str(text_file), "--context", "32"]
        + ["--max-windows", "1", "--seeds", "1", "-m", "toy", "-m", "toy:bits=4"],
    )
    assert res.exit_code == 0, res.output
    assert "TOY-2" in res.output and "TOY-4" in res.output


def test_registering_a_clashing_or_unnamed_method_is_refused(toy):
    class Other(Toy):
        method: Literal["toy"] = "toy"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)

    class Nameless(TensorMethod):
        pass

    with pytest.raises(TypeError, match="method"):
        register(Nameless)


# ---------------------------------------------------------------- options and labels
STAGE_OPTIONS = {"rounding": "rounding", "outliers_by": "outliers"}


def _other_value(cls, key):
    """A valid non-default value for option ``key`` of ``cls`` (None if none is found)."""
    f = cls.model_fields[key]
    ann = f.annotation
    is_union = typing.get_origin(ann) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(ann) if a is not type(None)) if is_union else ann
    default = cls.implied.get(key, f.default)
    if typing.get_origin(base) is Literal:
        cands = list(typing.get_args(base))
    elif key in STAGE_OPTIONS:  # options that name a pipeline stage: every registered one
        cands = stage_names(STAGE_OPTIONS[key])
    elif key == "cell_model":
        cands = ["ibm_cmo_hfox"]
    elif key in ("age", "target_age"):
        cands = ["1d"]
    elif base is bool:
        cands = [not bool(default)]
    elif base is int:
        cands = [2, 3, 4, 1, 8, 16, 32, 6]
    elif base is float:
        cands = [0.02, 0.001, 0.1, 2.0]
    else:
        return None
    for c in cands:
        if c == default:
            continue
        fields = {key: c}
        if (
            key in ("cell_bits", "ideal_memory", "mram_ber", "mram_ecc", *RERAM_DEFAULTS)
            and "reram" in cls.model_fields
        ):
            fields["reram"] = True
        if key == "cell_layout":
            fields["bits"], fields["cell_bits"] = 4, 3
        if key == "read_reference":
            fields["age"] = "1d"
        if key in ("calib_samples", "calib_len") and "rounding" in cls.model_fields:
            fields["rounding"] = "gptq"
        if key == "quantize_embeddings" and "rounding" in cls.model_fields:
            fields["rounding"] = "nearest"
        if key == "gptq_noise":
            fields["rounding"] = "gptq"
        if key == "sensitivity":
            fields["budget"] = 3.0
        try:
            return fields, cls(**fields)
        except ValueError:
            continue
    return None


@pytest.mark.parametrize("method", BUILTIN)
def test_every_option_that_changes_results_is_in_the_label(method):
    cls = method_class(method)
    default = cls()
    for key in options(cls):
        if key == "label":
            continue
        found = _other_value(cls, key)
        assert found is not None, f"{method}.{key}: no valid non-default value found"
        fields, spec = found
        base = cls(**{k: v for k, v in fields.items() if k != key}) if len(fields) > 1 else default
        assert spec.name != base.name, f"{method}:{key}={fields[key]} does not show in {spec.name!r}"


def test_labels_of_presets_are_unique_and_round_trip():
    names = [parse_method(p).name for p in PRESETS]
    assert len(set(names)) == len(names)
    for p in PRESETS:
        spec = parse_method(p)
        back = spec_from_dict(json.loads(json.dumps(spec.model_dump())))
        assert back == spec and back.name == spec.name and back.model_dump() == spec.model_dump()
    with pytest.raises(ValueError, match="has no option 'colour'"):
        spec_from_dict({**parse_method("qmc3").model_dump(), "colour": 1})


def _stored_specs() -> list[dict]:
    """Every method spec the repository's results hold: results files' rows and the store's points."""
    from qmc_edge.sweep.store import Store

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    out = []
    for f in sorted((root / "results").glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(d, dict) and isinstance(d.get("rows"), list):
            out += [r["spec"] for r in d["rows"] if isinstance(r, dict) and isinstance(r.get("spec"), dict)]
    out += [json.loads(r["spec_json"]) for r in Store(root / "store").read().to_pylist()]
    return out


def test_every_stored_spec_still_reads_as_what_it_measured():
    """Specs stored by earlier code (results files, the store) read back with every option they
    recorded, renamed options under today's names: a rename or a new validation that broke reading
    the repository's results fails here."""
    from qmc_edge.methods.registry import current_options

    stored = _stored_specs()
    assert len(stored) > 100
    for d in stored:
        spec = spec_from_dict(d)
        now = spec.model_dump()
        for k, v in current_options(d).items():
            assert now[k] == v or (isinstance(v, list) and now[k] == tuple(v)), (d, k)


def test_mram_ber_shows_in_the_label_and_rows_differ():
    a = parse_method("qmc3")
    b = parse_method("qmc:bits=3,cell_bits=3,rho=0.01,mram_ber=0.001")
    assert a.name != b.name and "mram_ber=0.001" in b.name


@pytest.mark.parametrize(
    "text,needle",
    [
        ("rtn:rho=0.05", "rtn has no option 'rho'"),
        ("rtn:cell_bits=2", "has no option 'cell_bits'"),
        ("emem:rho=0.2", "emem has no option 'rho'"),
        ("mxint4:bits=3", "mxint4 has no option 'bits'"),
        ("mxint4:group_size=7", "has no option 'group_size'"),
        ("fp:bits=9", "fp has no option 'bits'"),
        ("rtn:mram_ber=1e-3", "has no option 'mram_ber'"),  # RTN keeps its scales in DRAM
        ("mxint4:mram_ecc=secded", "has no option 'mram_ecc'"),
        ("hqq:mram_ber=1e-3", "only with reram=true"),
        ("emem:mram_ecc=chipkill", "mram_ecc"),
        ("qmc:n_clip=0", "n_clip must be in 1..1000"),
        ("qmc:n_clip=-5", "n_clip must be in 1..1000"),
        ("qmc:bits=2,bits=4", "given twice"),
        ("qmc:bits=3.5", "valid integer"),
        ("qmc:bits=true", "valid integer"),
        ("qmc:calib_samples=8", "applies only to calibrated"),
        ("gptq:cell_bits=2", "only with reram=true"),
        ("hqq:ideal_memory=true", "only with reram=true"),
        ("qmc:,bits=3", "empty method option"),
        ("qmc:rounding=best", "rounding"),
        ("qmc:outlier_bits=1", "outlier_bits"),
        ("qmc:mram_ber=1", "mram_ber"),
        ("rtn:group_size=-1", "group_size"),
        ("rtn:bits=7", "bits"),
        ("qmc:cell_bits=4", "cell_bits"),
        ("nosuch", "unknown method"),
        ("qmc:rho", "key=value"),
        ("rtn:reram=true", "use emem"),
    ],
)
def test_inapplicable_or_bad_options_are_refused(text, needle):
    with pytest.raises(ValueError) as exc:
        parse_method(text)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg, msg


def test_unknown_key_error_lists_the_valid_keys():
    with pytest.raises(ValueError) as exc:
        parse_method("rtn:colour=red")
    assert "bits, group_size, quantize_embeddings" in str(exc.value)


def test_flags_must_apply_and_must_not_repeat_the_spec():
    with pytest.raises(ValueError, match="mxint4 has no option 'bits'"):
        parse_method("mxint4", bits=2)
    with pytest.raises(ValueError, match="both in"):
        parse_method("qmc:bits=3", bits=2)
    assert parse_method("qmc3", bits=2).bits == 2  # a preset's option may be overridden by a flag


# ---------------------------------------------------------------- seeds: one meaning
def test_noise_streams_follow_names_not_order(tiny_model):
    spec = parse_method("qmc3")
    qm = quantize_model(tiny_model, spec)
    names = list(qm.tensors)
    qm.realise(tiny_model, 3)
    params = dict(tiny_model.named_parameters())
    first = {n: params[n].detach().clone() for n in names}
    qm.restore(tiny_model)
    shuffled = QuantizedModel(spec, {n: qm.tensors[n] for n in reversed(names)}, 0.0, qm.reference)
    shuffled.realise(tiny_model, 3)
    assert all(torch.equal(params[n], first[n]) for n in names)
    # a subset reads its tensors exactly as the whole model does
    one = QuantizedModel(spec, {names[1]: qm.tensors[names[1]]}, 0.0, {})
    qm.restore(tiny_model)
    one.realise(tiny_model, 3)
    assert torch.equal(params[names[1]], first[names[1]])
    assert seed_for(3, names[0]) != seed_for(3, names[1]) and seed_for(3, names[0]) != seed_for(4, names[0])


def test_realise_none_is_the_noise_free_read(tiny_model):
    qm = quantize_model(tiny_model, parse_method("qmc3"))
    params = dict(tiny_model.named_parameters())
    qm.realise(tiny_model, None)
    assert all(torch.equal(params[n], qt.dequantize()) for n, qt in qm.tensors.items())
    qm.realise(tiny_model, 0)
    assert any(not torch.equal(params[n], qt.dequantize()) for n, qt in qm.tensors.items())


def test_seed_words_in_the_cli(tiny_model_dir, text_file):
    base = ["ppl", "--model", str(tiny_model_dir), "--text", str(text_file), "--context", "32", "--max-windows", "1"]
    res = runner.invoke(app, [*base, "-m", "qmc3", "--seeds", "1", "--noise-seed", "5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--seed", "5"])
    assert res.exit_code == 2 and "--seed" in res.output  # the old, ambiguous word is gone
    res = runner.invoke(app, [*base, "--noise-seed", "-1"])
    assert res.exit_code == 2 and "--noise-seed must be >= 0" in res.output
    res = runner.invoke(
        app, ["generate", "--model", str(tiny_model_dir), "-p", "w1", "--sample", "--sample-seed", "-3"]
    )
    assert res.exit_code == 2 and "--sample-seed" in res.output


def test_synthetic_text_is_available():
    assert synthetic_text(3).count("\n") == 3


def test_tables_are_full_width_without_a_terminal():
    """Piped into a file or a CI log, rich would cut tables to 80 columns; they must stay readable."""
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "qmc_edge.cli.app", "methods"], capture_output=True, text=True, check=True, timeout=120
    )
    lines = res.stdout.splitlines()
    assert max(len(ln) for ln in lines) > 120  # wider than a terminal's default, not wrapped to 80
    assert "…" not in res.stdout  # no cell was cut
    assert "calib_samples=64" in res.stdout and "outlier_bits=8" in res.stdout


def test_library_methods_off_reram_are_deterministic_with_no_mram_faults():
    """reram=false leaves a library method's MRAM options unset (None): not noisy, no faults."""
    from qmc_edge.methods import parse_method

    for text in ("hqq3", "gptq4", "awq4"):
        spec = parse_method(text)
        assert spec.noisy is False and spec.mram().ber == 0.0 and spec.mram().ecc == "none"
