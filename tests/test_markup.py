"""Text from users and files is printed as written: never parsed as terminal markup (a label such as
``[/red]x`` raised rich's MarkupError mid-run; ``[gptq]`` in an extra's name was eaten)."""

from __future__ import annotations

import yaml
from test_sweep import _spec
from typer.testing import CliRunner

from qmc_edge.cli.app import app

MARKUP = "[/red]x[bold]y"


def test_a_method_label_with_markup_is_printed_as_written(tiny_model_dir):
    r = CliRunner().invoke(app, ["quantize", "--model", str(tiny_model_dir), "-m", f"rtn:bits=4,label={MARKUP}"])
    assert r.exit_code == 0, r.output
    assert MARKUP in r.output and "Traceback" not in r.output


def test_the_extras_keep_their_brackets_in_qmc_methods():
    r = CliRunner().invoke(app, ["methods"])
    assert r.exit_code == 0 and "extra [gptq]" in r.output and "extra [hqq]" in r.output


def test_a_sweep_and_its_labels_with_markup_run_and_report(tiny_model_dir, tmp_path):
    data = _spec(str(tiny_model_dir), methods=[f"rtn:bits=4,label={MARKUP}"], grids=[]).model_dump()
    data["name"] = "s[/red]"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    store = tmp_path / "st"
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
    assert r.exit_code == 0 and "sweep s[/red]" in r.output and "done 1" in r.output, r.output
    r = CliRunner().invoke(app, ["report", str(store)])
    assert r.exit_code == 0, r.output
