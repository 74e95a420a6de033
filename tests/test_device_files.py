"""Cell-model files (validated YAML, a source on every number), retention, read noise, write-verify,
noise_scale, spread partial cells, and `qmc cells`."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from scipy.special import ndtr
from typer.testing import CliRunner

from qmc_edge.cli.memory_cmds import register
from qmc_edge.errors import QMCError
from qmc_edge.memory.cells import (
    cells_to_codes,
    code_error_moments,
    code_transition_matrix,
    codes_to_cells,
    read_codes,
    spread_levels,
)
from qmc_edge.memory.drift import Relaxation
from qmc_edge.memory.files import (
    DEFAULT_CELL_MODEL,
    Figure,
    format_age,
    load_cell_model,
    parse_age,
    shipped_cell_models,
)
from qmc_edge.memory.models import (
    RERAM_LEVELS,
    GaussianLevelReRAM,
    IdealCells,
    _gaussian_intersection,
    cell_model_table,
    reram,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = Path(str(resources.files("qmc_edge") / "cell_models"))

# The level tables as they were hard-coded in devices.py before cell-model files existed.
TODAY_LEVELS = {
    1: ((0.000, 0.0086), (1.000, 0.0034)),
    2: ((0.000, 0.0086), (0.385, 0.0335), (0.722, 0.0274), (1.000, 0.0034)),
    3: (
        (0.000, 0.0086),
        (0.078, 0.013),
        (0.204, 0.030),
        (0.385, 0.034),
        (0.542, 0.025),
        (0.722, 0.027),
        (0.886, 0.037),
        (1.000, 0.0034),
    ),
}

# aihwkit ReRamCMONoiseModel (src/aihwkit/inference/noise/reram.py): decay_dict and read_dict.
AIHWKIT_MEAN = -0.08900206
AIHWKIT_STD = (0.04201137, 0.41183342)
AIHWKIT_READ_K, AIHWKIT_T_READ = 0.0277316483, 1e-6
WINDOW_uS = 90.0 - 8.0
YEAR = 365.25 * 86400


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def today_matrix(table) -> np.ndarray:
    """The transition matrix exactly as devices.py computed it before cell-model files."""
    thr = np.array([_gaussian_intersection(*table[i], *table[i + 1]) for i in range(len(table) - 1)])
    mu = np.array([m for m, _ in table])[:, None]
    sd = np.array([s for _, s in table])[:, None]
    edges = np.concatenate([[-np.inf], thr, [np.inf]])[None, :]
    return np.diff(ndtr((edges - mu) / sd), axis=1)


def today_code_matrix(bits: int, device) -> np.ndarray:
    """code_transition_matrix as it was (left-aligned partial cells), written out independently."""
    c = device.bits_per_cell
    t = device.transition_matrix()
    n = 2**bits
    k = math.ceil(bits / c)
    layout, remaining = [], bits
    for _ in range(k):
        w = min(c, remaining)
        remaining -= w
        layout.append((remaining, w))
    p = np.ones((n, n))
    codes = np.arange(n)
    for shift, w in layout:
        stored = ((codes >> shift) & ((1 << w) - 1)) << (c - w)
        per_value = np.zeros((2**c, 2**w))
        for level in range(2**c):
            per_value[:, level >> (c - w)] += t[:, level]
        p *= per_value[stored][:, stored >> (c - w)]
    return p


def code_error_rate(bits: int, device, layout: str) -> float:
    return float(1.0 - np.mean(np.diag(code_transition_matrix(bits, device, layout))))


# --------------------------------------------------------------------------- shipped files


def test_shipped_devices_and_package_data():
    assert shipped_cell_models() == ["ibm_cmo_hfox", "nvmexplorer_rram"]
    assert DEFAULT_CELL_MODEL in shipped_cell_models()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "cell_models/*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["qmc_edge"]


@pytest.mark.parametrize("name", ["ibm_cmo_hfox", "nvmexplorer_rram"])
def test_every_shipped_number_has_a_source(name):
    dev = load_cell_model(name)
    assert dev.name == name and dev.source.strip()
    figures = []

    def walk(obj):
        if isinstance(obj, Figure):
            figures.append(obj)
        elif hasattr(type(obj), "model_fields"):
            for k in type(obj).model_fields:
                walk(getattr(obj, k))
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    walk(dev)
    # 2 + 4 + 8 levels x (mean, sigma), 2 conductances, 5 retention, 2 read noise, 5 write-verify figures
    assert len(figures) == 28 + 2 + 5 + 2 + 5
    assert all(f.source.strip() for f in figures)
    assert dev.retention is not None and dev.read_noise is not None and dev.write_verify is not None


def test_default_file_holds_todays_tables():
    assert RERAM_LEVELS == TODAY_LEVELS
    dev = load_cell_model()
    for bits, table in TODAY_LEVELS.items():
        assert dev.table(bits) == table


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("age", [0.0, "0s", 0.5, "1s"])
def test_fresh_matrices_are_bit_identical_to_today(bits, age):
    d = reram(bits, age_s=age)
    assert np.array_equal(d.transition_matrix(), today_matrix(TODAY_LEVELS[bits]))
    assert np.array_equal(GaussianLevelReRAM(bits_per_cell=bits).transition_matrix(), d.transition_matrix())
    assert np.array_equal(d.programming_matrix(), d.transition_matrix())
    assert d.name == f"reram-{bits}b/cell"


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6])
def test_left_layout_code_matrices_are_bit_identical_to_today(bits):
    d = reram(3)
    assert np.array_equal(code_transition_matrix(bits, d), today_code_matrix(bits, d))
    assert np.array_equal(code_transition_matrix(bits, d, "left"), today_code_matrix(bits, d))
    codes = torch.arange(2**bits)
    old_cells = torch.stack([((codes >> s) & ((1 << w) - 1)) << (3 - w) for s, w in _layout(bits, 3)], dim=-1).to(
        torch.uint8
    )
    assert torch.equal(codes_to_cells(codes, bits, 3), old_cells)


def _layout(bits, c):
    out, remaining = [], bits
    for _ in range(math.ceil(bits / c)):
        w = min(c, remaining)
        remaining -= w
        out.append((remaining, w))
    return out


def test_user_copy_with_a_new_name_loads_and_matches(tmp_path):
    data = yaml.safe_load((SHIPPED / "nvmexplorer_rram.yaml").read_text())
    data["name"] = "my_rram"
    path = tmp_path / "my_rram.yaml"
    path.write_text(yaml.safe_dump(data))
    dev = load_cell_model(path)
    assert dev.name == "my_rram"
    assert np.array_equal(reram(3, cell_model=str(path)).transition_matrix(), reram(3).transition_matrix())
    assert reram(3, cell_model=path).describe()["cell_model"] == "my_rram"
    # The shipped file itself, by path, is the shipped cell model (not a clash).
    assert load_cell_model(SHIPPED / "nvmexplorer_rram.yaml").name == "nvmexplorer_rram"


# --------------------------------------------------------------------------- broken files


def _base() -> dict:
    return yaml.safe_load((SHIPPED / "nvmexplorer_rram.yaml").read_text()) | {"name": "broken_rram"}


def _mutated_levels(fn):
    def mutate(d: dict) -> dict:
        fn(d["levels"])
        return d

    return mutate


def _lv(mean, sigma):
    return {"mean": {"value": mean, "source": "x"}, "sigma": {"value": sigma, "source": "x"}}


BROKEN = {
    "nan sigma": (_mutated_levels(lambda lv: lv[3][2]["sigma"].update(value=float("nan"))), "levels.3.2.sigma"),
    "negative sigma": (
        _mutated_levels(lambda lv: lv[3][2]["sigma"].update(value=-0.01)),
        "levels.3.2.sigma: must be > 0",
    ),
    "zero sigma": (_mutated_levels(lambda lv: lv[2][1]["sigma"].update(value=0)), "levels.2.1.sigma: must be > 0"),
    "non-increasing means": (
        _mutated_levels(lambda lv: lv[3][4]["mean"].update(value=0.3)),
        "levels: table 3: means must increase from level to level: level 4",
    ),
    "mean above 1": (
        _mutated_levels(lambda lv: lv[3][7]["mean"].update(value=1.2)),
        "levels.3.7.mean: must be in [0, 1]",
    ),
    "unknown key": (lambda d: d | {"colour": "blue"}, "colour: unknown field"),
    "unknown nested key": (
        _mutated_levels(lambda lv: lv[3][0].update(mu={"value": 0.0, "source": "x"})),
        "levels.3.0.mu: unknown field",
    ),
    "missing source": (
        _mutated_levels(lambda lv: lv[3][1]["mean"].pop("source")),
        "levels.3.1.mean.source: missing (required)",
    ),
    "bare number": (
        _mutated_levels(lambda lv: lv[3][1].update(sigma=0.013)),
        "levels.3.1.sigma: a bare number (0.013)",
    ),
    "empty source": (
        _mutated_levels(lambda lv: lv[1][0]["sigma"].update(source=" ")),
        "levels.1.0.sigma: source is empty",
    ),
    "wrong number of levels": (
        _mutated_levels(lambda lv: lv[3].pop()),
        "levels: table 3 has 7 levels; 3 bits per cell need 8",
    ),
    "bits per cell out of range": (
        _mutated_levels(lambda lv: lv.update({5: [_lv(i / 31, 0.01) for i in range(32)]})),
        "levels: key 5: bits per cell must be 1 to 4",
    ),
    "boolean figure": (lambda d: d["conductance"]["g_min_uS"].update(value=True) or d, "conductance.g_min_uS"),
    "window upside down": (
        lambda d: d["conductance"]["g_max_uS"].update(value=5.0) or d,
        "conductance: g_max_uS (5) must be above g_min_uS (8)",
    ),
    "measured before fresh": (
        lambda d: d["retention"]["measured_to_s"].update(value=0.5) or d,
        "retention: measured_to_s must be >= fresh_at_s",
    ),
    "missing levels": (lambda d: {k: v for k, v in d.items() if k != "levels"}, "levels: missing (required)"),
    "missing top-level source": (lambda d: {k: v for k, v in d.items() if k != "source"}, "source: missing (required)"),
    "tight sigma above loose": (
        lambda d: d["write_verify"]["tight_slope"].update(value=1.0) or d,
        "write_verify: the tight sigma",
    ),
    "name clash": (
        lambda d: d | {"name": "nvmexplorer_rram"},
        "name 'nvmexplorer_rram' is taken by a shipped cell model",
    ),
    "bad name": (lambda d: d | {"name": "my device!"}, "name: 'my device!' is not a cell-model name"),
    "not a mapping": (lambda d: [1, 2, 3], "the file must be a mapping of fields"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_device_file_names_the_field(tmp_path, case):
    mutate, expected = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(mutate(_base()), allow_unicode=True))
    with pytest.raises(QMCError) as exc:
        load_cell_model(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"cell model {path}"), msg
    assert expected in msg, msg
    # reram() reports the same one line.
    with pytest.raises(QMCError, match="cell model "):
        reram(3, cell_model=path)


RAW = {
    "duplicate key": ("name: a\nname: b\n", "duplicate key 'name' at line 2"),
    "duplicate section": (
        (SHIPPED / "nvmexplorer_rram.yaml").read_text().replace("name: nvmexplorer_rram", "name: x")
        + "conductance:\n  g_min_uS: {value: 1, source: y}\n",
        "duplicate key 'conductance'",
    ),
    "duplicate nested key": (
        (SHIPPED / "nvmexplorer_rram.yaml")
        .read_text()
        .replace("name: nvmexplorer_rram", "name: x")
        .replace("g_max_uS:", "g_min_uS:", 1),
        "duplicate key 'g_min_uS'",
    ),
    "empty": ("", "the file is empty"),
    "comments only": ("# nothing here\n", "the file is empty"),
    "invalid yaml": ("name: [unclosed\n", "not valid YAML"),
    "scalar": ("just text\n", "must be a mapping of fields"),
}


@pytest.mark.parametrize("case", sorted(RAW))
def test_broken_raw_file_names_the_problem(tmp_path, case):
    text, expected = RAW[case]
    path = tmp_path / "raw.yaml"
    path.write_text(text)
    with pytest.raises(QMCError) as exc:
        load_cell_model(path)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"cell model {path}")
    assert expected in str(exc.value)


def test_binary_non_utf8_missing_and_directory_are_refused(tmp_path):
    binary = tmp_path / "cells.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    with pytest.raises(QMCError, match="binary data, not a YAML text file"):
        load_cell_model(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(QMCError, match="not UTF-8 text"):
        load_cell_model(latin)
    with pytest.raises(QMCError, match="cell model file not found"):
        load_cell_model(tmp_path / "absent.yaml")
    with pytest.raises(QMCError, match="is a directory"):
        load_cell_model(tmp_path)
    with pytest.raises(QMCError, match="unknown cell model 'nvmexplorer'.*nvmexplorer_rram"):
        load_cell_model("nvmexplorer")


def test_reram_option_errors():
    with pytest.raises(ValueError, match="bits per cell"):
        reram(4)
    with pytest.raises(ValueError, match="noise_scale"):
        reram(3, noise_scale=0)
    with pytest.raises(ValueError, match="noise_scale"):
        reram(3, noise_scale=100.5)
    with pytest.raises(ValueError, match="noise_scale"):
        reram(3, noise_scale=float("nan"))
    with pytest.raises(ValueError, match="reference"):
        reram(3, reference="sideways")
    with pytest.raises(ValueError, match="age"):
        reram(3, age_s="soon")
    # A model without retention figures refuses an age instead of ignoring it.
    with pytest.raises(ValueError, match="no retention figures"):
        GaussianLevelReRAM(bits_per_cell=1, level_table=((0.0, 0.2), (1.0, 0.2)), age_s=3600)


def test_sections_a_file_lacks_are_refused_when_asked_for(tmp_path):
    data = _base()
    for key in ("retention", "read_noise", "write_verify"):
        del data[key]
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(data))
    assert np.array_equal(reram(3, cell_model=path).transition_matrix(), reram(3).transition_matrix())
    with pytest.raises(ValueError, match="no retention figures"):
        reram(3, cell_model=path, age_s="1d")
    with pytest.raises(ValueError, match="no write-verify figures"):
        reram(3, cell_model=path, write_verify=True)
    with pytest.raises(ValueError, match="no read-noise figures"):
        reram(3, cell_model=path, read_noise=True)
    row = cell_model_table([path])[2]
    assert row["error_rate_at"]["1d"] is None and row["measured_to_s"] is None


# --------------------------------------------------------------------------- ages


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("1s", 1.0),
        ("10min", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1y", YEAR),
        ("10y", 10 * YEAR),
        ("1.5h", 5400.0),
        (" 2 d ", 172800.0),
        ("3600", 3600.0),
        ("1e3", 1000.0),
        (3600, 3600.0),
        (0.5, 0.5),
        ("0", 0.0),
    ],
)
def test_parse_age(text, seconds):
    assert parse_age(text) == pytest.approx(seconds, rel=1e-15)


@pytest.mark.parametrize(
    "bad", ["", "soon", "-1s", "1 parsec", "1yy", "d", "1h30min", True, None, -5, math.inf, "2000y"]
)
def test_parse_age_refuses_bad_input_in_one_line(bad):
    with pytest.raises(ValueError) as exc:
        parse_age(bad)
    assert "\n" not in str(exc.value) and "age" in str(exc.value)


def test_format_age_round_trips_the_usual_ages():
    for a in ("1s", "10min", "1h", "1d", "1w", "1y", "10y"):
        assert format_age(parse_age(a)) == a


# --------------------------------------------------------------------------- retention


TABULATED = {"1s": 1.0, "10min": 600.0, "1h": 3600.0, "1d": 86400.0, "1w": 604800.0, "1y": YEAR, "10y": 10 * YEAR}


@pytest.mark.parametrize("device", ["nvmexplorer_rram", "ibm_cmo_hfox"])
@pytest.mark.parametrize("age", sorted(TABULATED))
def test_retention_equals_the_published_fit_at_the_tabulated_times(device, age):
    t = TABULATED[age]
    relax = Relaxation.from_file(load_cell_model(device))
    # aihwkit ReRamCMONoiseModel: mean -0.08900206 ln t, std 0.04201137 ln t + 0.41183342 (uS).
    assert relax.shift(t) * WINDOW_uS == pytest.approx(AIHWKIT_MEAN * math.log(t), abs=1e-12)
    assert relax.spread(t) * WINDOW_uS == pytest.approx(AIHWKIT_STD[0] * math.log(t) + AIHWKIT_STD[1], rel=1e-12)
    # ... and that is what every level of the model does at that age.
    fresh, aged = reram(3, cell_model=device), reram(3, cell_model=device, age_s=age)
    np.testing.assert_allclose(aged.level_means() - fresh.level_means(), relax.shift(t), rtol=0, atol=1e-15)
    s_t = (AIHWKIT_STD[0] * math.log(t) + AIHWKIT_STD[1]) / WINDOW_uS
    s_0 = AIHWKIT_STD[1] / WINDOW_uS
    np.testing.assert_allclose(aged.level_sigmas() ** 2 - fresh.level_sigmas() ** 2, s_t**2 - s_0**2, atol=1e-15)
    assert aged.age_extrapolated == (t > 3600)


def test_retention_fit_agrees_with_the_measured_one_hour_relaxation():
    # Falcone et al. (arXiv:2502.04524), relaxation figure: average 1 h relaxation error -0.68 uS (measured).
    relax = Relaxation.from_file(load_cell_model())
    assert relax.shift(3600) * WINDOW_uS == pytest.approx(-0.68, rel=0.1)
    assert relax.measured_to_s == 3600


def test_derived_cmo_levels_follow_their_source_formula():
    dev = load_cell_model("ibm_cmo_hfox")
    for bits in (1, 2, 3):
        for i, (mean, sigma) in enumerate(dev.table(bits)):
            assert mean == pytest.approx(i / (2**bits - 1), abs=5e-5)
            g = 8.0 + WINDOW_uS * mean
            prog = 0.0112185391 + 0.01129027418 * g  # aihwkit coeff_dict[2] (2% acceptance)
            assert sigma == pytest.approx(math.hypot(prog, AIHWKIT_STD[1]) / WINDOW_uS, abs=6e-6)


@pytest.mark.parametrize("bits", [2, 3])
def test_error_rates_grow_with_age_and_aged_references_recover_some(bits):
    rates = [reram(bits, age_s=a).describe()["mean_cell_error_rate"] for a in ("1s", "1h", "1d", "1y", "10y")]
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False))
    for a in ("1d", "10y"):
        fixed = reram(bits, age_s=a).describe()["mean_cell_error_rate"]
        aged = reram(bits, age_s=a, reference="aged").describe()["mean_cell_error_rate"]
        assert aged < fixed
    info = reram(bits, age_s="10y").describe()
    assert info["age"] == "10y" and info["age_extrapolated"] and info["cell_model"] == "nvmexplorer_rram"
    # Aged matrices stay row-stochastic.
    t = reram(bits, age_s="10y").transition_matrix()
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(t >= 0)


def test_fixed_references_keep_the_fresh_thresholds():
    fresh = reram(3)
    aged = reram(3, age_s="1y")
    assert np.array_equal(aged.thresholds(), fresh.thresholds())
    assert not np.array_equal(reram(3, age_s="1y", reference="aged").thresholds(), fresh.thresholds())


# --------------------------------------------------------------------------- noise_scale, write-verify, read noise


@pytest.mark.parametrize("age", ["1s", "1d"])
def test_noise_scale_two_doubles_the_sigmas(age):
    base, twice = reram(3, age_s=age), reram(3, age_s=age, noise_scale=2)
    np.testing.assert_allclose(twice.level_sigmas(), 2 * base.level_sigmas(), rtol=1e-15)
    np.testing.assert_array_equal(twice.level_means(), base.level_means())
    assert twice.describe()["mean_cell_error_rate"] > base.describe()["mean_cell_error_rate"]
    assert twice.describe()["noise_scale"] == 2.0


def test_noise_scale_two_is_a_table_with_doubled_sigmas():
    doubled = tuple((m, 2 * s) for m, s in TODAY_LEVELS[3])
    np.testing.assert_allclose(
        reram(3, noise_scale=2).transition_matrix(), today_matrix(doubled), rtol=1e-12, atol=1e-300
    )


def test_write_verify_narrows_by_the_sourced_factor():
    dev = load_cell_model()
    g = 49.0
    factor = (0.00081107 + 0.00106879 * g) / (0.0112185391 + 0.01129027418 * g)  # aihwkit 0.2% / 2% at 49 uS
    assert dev.write_verify.factor == pytest.approx(factor, rel=1e-12)
    assert factor == pytest.approx(0.0942, abs=1e-4)
    plain, wv = reram(3), reram(3, write_verify=True)
    np.testing.assert_allclose(wv.level_sigmas(), factor * plain.level_sigmas(), rtol=1e-15)
    assert wv.describe()["mean_cell_error_rate"] < plain.describe()["mean_cell_error_rate"]
    assert wv.describe()["write_verify_factor"] == pytest.approx(factor)
    # Ageing widens on top of the narrowed programming: relaxation is not narrowed.
    aged = reram(3, write_verify=True, age_s="1d")
    assert np.all(aged.level_sigmas() > wv.level_sigmas())


def test_read_noise_follows_the_aihwkit_formula_and_adds_variances():
    d = reram(3, read_noise=True)
    g = 8.0 + WINDOW_uS * np.array([m for m, _ in TODAY_LEVELS[3]])
    t = 1.0
    expected = AIHWKIT_READ_K * np.log10(g) * math.sqrt(math.log((t + AIHWKIT_T_READ) / (2 * AIHWKIT_T_READ)))
    np.testing.assert_allclose(d.read_sigma, expected / WINDOW_uS, rtol=1e-12)
    assert np.all(d.read_sigma < np.array([s for _, s in TODAY_LEVELS[3]]))  # small next to programming
    np.testing.assert_array_equal(reram(3).read_sigma, np.zeros(8))
    combined = tuple((m, math.hypot(s, r)) for (m, s), r in zip(TODAY_LEVELS[3], d.read_sigma, strict=True))
    np.testing.assert_allclose(d.transition_matrix(), today_matrix(combined), rtol=1e-12, atol=1e-300)
    # Programming alone, same thresholds, is less noisy than both together.
    assert np.trace(d.programming_matrix()) > np.trace(d.transition_matrix())
    # Read noise grows with the time since programming (1/f noise over a longer window).
    assert np.all(reram(3, read_noise=True, age_s="1y").read_sigma > d.read_sigma)


def test_sampled_reads_and_program_sense_match_the_matrix_with_read_noise():
    d = reram(3, read_noise=True, noise_scale=2.0)  # noisier, so that a modest sample sees errors
    t = d.transition_matrix()
    levels = torch.arange(8).repeat_interleave(20_000)
    n = 20_000
    for reads in (d.read(levels, gen(0)), d.sense(d.program(levels, gen(1)), gen(2))):
        for i in range(8):
            got = reads[levels == i]
            for j in (i - 1, i, i + 1):
                if 0 <= j < 8:
                    p = t[i, j]
                    freq = float((got == j).float().mean())
                    assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4, (i, j, freq, p)
    # A frozen chip re-read: the programmed conductances stay, the read noise is drawn again.
    chip = d.program(levels, gen(3))
    assert torch.equal(d.sense(chip), d.sense(chip))
    assert not torch.equal(d.sense(chip, gen(4)), d.sense(chip, gen(5)))


def test_ideal_ignores_the_device_options():
    d = reram(3, ideal=True, age_s="10y", noise_scale=4, read_noise=True)
    assert isinstance(d, IdealCells) and d.is_ideal


# --------------------------------------------------------------------------- spread partial cells


@pytest.mark.parametrize(
    "bits,left,spread_below",
    [(4, 5.3e-3, 3.8e-3), (2, 2.86e-3, 1.1e-3), (1, 1.6e-3, 1e-12), (5, 6.56e-3, 3.9e-3)],
)
def test_spread_partial_cells_lower_the_exact_code_error_rate(bits, left, spread_below):
    d = reram(3)
    assert code_error_rate(bits, d, "left") == pytest.approx(left, rel=0.01)
    assert code_error_rate(bits, d, "spread") < spread_below
    assert code_error_rate(bits, d, "spread") < code_error_rate(bits, d, "left")
    p = code_transition_matrix(bits, d, "spread")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)


def test_spread_levels():
    d = reram(3)
    assert spread_levels(1, 3) == (0, 7)
    assert spread_levels(2, 3) == (0, 2, 5, 7)
    assert spread_levels(1, 2) == (0, 3)
    assert spread_levels(3, 3, d) == tuple(range(8))
    assert spread_levels(1, 3, d) == (0, 7)  # ties (no error at all) go to the widest spacing
    best = spread_levels(2, 3, d)
    assert len(best) == 4 and list(best) == sorted(best) and best[0] == 0 and best[-1] == 7
    # It is the best of every 4-level set, by the exact rate.
    assert code_error_rate(2, d, "spread") <= 1 - np.mean(
        np.diag(_explicit_partial_matrix(d.transition_matrix(), (0, 2, 5, 7)))
    )
    assert spread_levels(2, 3, IdealCells(bits_per_cell=3)) == (0, 2, 5, 7)
    with pytest.raises(ValueError, match="layout"):
        codes_to_cells(torch.arange(4), 2, 3, layout="middle")


def _explicit_partial_matrix(t, used):
    n = len(used)
    dec = [max(range(n), key=lambda v: (t[used[v], j], -abs(used[v] - j), -v)) for j in range(t.shape[0])]
    p = np.zeros((n, n))
    for v, u in enumerate(used):
        for j in range(t.shape[0]):
            p[v, dec[j]] += t[u, j]
    return p


@pytest.mark.parametrize("cell_bits", [1, 2, 3])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("with_device", [False, True])
def test_spread_layout_round_trips_codes_exactly(bits, cell_bits, with_device):
    d = reram(cell_bits) if with_device else None
    codes = torch.arange(2**bits)
    cells = codes_to_cells(codes, bits, cell_bits, "spread", d)
    assert cells.dtype == torch.uint8 and int(cells.max()) < 2**cell_bits
    assert torch.equal(cells_to_codes(cells, bits, cell_bits, "spread", d), codes)
    if bits % cell_bits == 0:  # no partial cell: both layouts are the same
        assert torch.equal(cells, codes_to_cells(codes, bits, cell_bits))
    # A noise-free device reads every code back.
    ideal = IdealCells(bits_per_cell=cell_bits)
    assert torch.equal(read_codes(codes, bits, ideal, gen(0), "spread"), codes)


def test_spread_sampled_reads_match_the_code_matrix():
    d = reram(3, noise_scale=2.0)
    bits = 4
    p = code_transition_matrix(bits, d, "spread")
    codes = torch.arange(16).repeat_interleave(6000)
    noisy = read_codes(codes, bits, d, gen(7), "spread")
    n = 6000
    for q in range(16):
        freq = float((noisy[codes == q] == q).float().mean())
        assert abs(freq - p[q, q]) < 5 * math.sqrt(p[q, q] * (1 - p[q, q]) / n) + 1e-4
    m1, m2 = code_error_moments(bits, d, "spread")
    assert m1.shape == (16,) and torch.all(m2 >= 0)


# --------------------------------------------------------------------------- qmc cells


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so that `devices` is a sub-command as in `qmc`
        pass

    return app


def test_cli_lists_the_shipped_devices_with_aged_error_rates(tmp_path):
    out = tmp_path / "devices.json"
    result = CliRunner().invoke(_app(), ["cells", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for name in shipped_cell_models():
        assert name in result.output
    for age in ("1s", "1d", "1y", "10y"):
        assert age in result.output
    payload = json.loads(out.read_text())
    assert payload["ages"] == ["1s", "1d", "1y", "10y"]
    rows = {(r["name"], r["bits_per_cell"]): r for r in payload["cell_models"]}
    assert set(rows) == {(n, b) for n in shipped_cell_models() for b in (1, 2, 3)}
    r = rows[("nvmexplorer_rram", 3)]
    assert r["mean_cell_error_rate"] == pytest.approx(reram(3).describe()["mean_cell_error_rate"])
    assert r["error_rate_at"]["1s"] == r["mean_cell_error_rate"]
    assert r["error_rate_at"]["10y"] == pytest.approx(reram(3, age_s="10y").describe()["mean_cell_error_rate"])
    assert r["extrapolated"] == ["1d", "1y", "10y"] and "NVMExplorer" in r["source"]


def test_cli_lists_a_user_file_and_refuses_bad_input(tmp_path):
    data = yaml.safe_load((SHIPPED / "nvmexplorer_rram.yaml").read_text()) | {"name": "lab_rram"}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(_app(), ["cells", "-f", str(path), "--age", "1h", "--noise-scale", "2"])
    assert result.exit_code == 0, result.output
    assert "lab_rram" in result.output and "1h" in result.output
    bad = tmp_path / "bad.yaml"
    shutil.copy(path, bad)
    bad.write_text(bad.read_text().replace("value: 0.0086", "value: -0.0086", 1))
    result = CliRunner().invoke(_app(), ["cells", "-f", str(bad)])
    assert result.exit_code == 2
    assert "levels.1.0.sigma: must be > 0" in result.output
    result = CliRunner().invoke(_app(), ["cells", "--age", "2 parsecs"])
    assert result.exit_code == 2 and "is not a time" in result.output
    result = CliRunner().invoke(_app(), ["cells", "--noise-scale", "0"])
    assert result.exit_code == 2 and "noise_scale" in result.output


def test_device_table_rows():
    rows = cell_model_table(["nvmexplorer_rram"], ("1s", 86400))
    assert [r["bits_per_cell"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"name", "bits_per_cell", "mean_cell_error_rate", "worst_level_error_rate", "source"} <= set(r)
        assert set(r["error_rate_at"]) == {"1s", "1d"}
