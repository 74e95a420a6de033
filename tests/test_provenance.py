"""Every result names the code that made it: the git commit and whether tracked files had changes."""

from __future__ import annotations

import json
import subprocess

import yaml
from test_sweep import _spec
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.provenance import _ROOT, code_revision


def test_the_revision_is_the_checkouts_head():
    rev = code_revision()
    if not (_ROOT / ".git").exists():
        assert rev["commit"] is None and "not a git checkout" in rev["source"]
        return
    head = subprocess.run(["git", "-C", str(_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert rev["commit"] == head.strip() and len(rev["commit"]) == 40 and isinstance(rev["dirty"], bool)


def test_results_files_and_store_rows_carry_it(tiny_model_dir, tmp_path):
    out = tmp_path / "q.json"
    r = CliRunner().invoke(app, ["quantize", "--model", str(tiny_model_dir), "-m", "rtn4", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["env"]["code"] == code_revision()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(str(tiny_model_dir), methods=["fp"], grids=[]).model_dump()), "utf-8")
    assert CliRunner().invoke(app, ["sweep", str(spec), "--store", str(tmp_path / "st")]).exit_code == 0
    from qmc_edge.sweep.store import Store

    (row,) = Store(tmp_path / "st").read().to_pylist()
    v = json.loads(row["versions_json"])
    assert v["commit"] == code_revision()["commit"] and v["dirty"] == code_revision()["dirty"]


def test_the_store_key_follows_the_results_version(tiny_model_dir, monkeypatch):
    """Version 1 keys as the store was first written (its points stay valid); any later version is in
    the key, so bumping it makes every stored point one to recompute."""
    import qmc_edge.sweep.spec as spec_mod

    points = spec_mod.expand(_spec(str(tiny_model_dir), methods=["fp", "qmc3"], grids=[]))
    monkeypatch.setattr(spec_mod, "RESULTS_VERSION", 2)
    again = spec_mod.expand(_spec(str(tiny_model_dir), methods=["fp", "qmc3"], grids=[]))
    assert {p.key for p in points}.isdisjoint({p.key for p in again})
