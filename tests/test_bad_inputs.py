"""The bad-input table (tests/bad_inputs.py): every case exits with code 2 and one `error:` line naming
the problem, with no traceback and nothing left on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bad_inputs import cases
from typer.testing import CliRunner

from qmc_edge.cli.app import app

runner = CliRunner()
ROOT_NAME = "bad-input-sandbox"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_model_dir, text_file):
    """A folder with the bad inputs, an artifact of the tiny model, and a copy of a packaged platform
    that keeps its built-in name."""
    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.deploy.platform import packaged_names
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model
    from qmc_edge.model.loading import load_model

    root = tmp_path_factory.mktemp(ROOT_NAME)
    lm = load_model(str(tiny_model_dir))
    spec = parse_method("rtn4")
    export_artifact(lm, spec, quantize_model(lm.model, spec), root / "artifact")
    import qmc_edge.deploy.platform as plat

    name = packaged_names()[0]
    copy = root / "my_platform.yaml"
    shutil.copy(Path(plat.__file__).parents[1] / "platforms" / f"{name}.yaml", copy)
    return root, cases(root, tiny_model_dir, text_file, root / "artifact", copy)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_table_is_large(sandbox):
    _, table = sandbox
    assert len(table) >= 60 and len({c.id for c in table}) == len(table)


def test_every_bad_input_is_refused_in_one_line(sandbox, monkeypatch, subtests=None):
    root, table = sandbox
    monkeypatch.chdir(root)
    before = _tree(root)
    failures = []
    for case in table:
        res = runner.invoke(app, case.argv)
        output = res.output
        errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
        problems = []
        if res.exit_code != 2:
            problems.append(f"exit {res.exit_code}")
        if len(errors) != 1 and "Usage:" not in output:
            problems.append(f"{len(errors)} error lines")
        if case.needle not in output:
            problems.append(f"no {case.needle!r}")
        if "Traceback" in output or (res.exception is not None and not isinstance(res.exception, SystemExit)):
            problems.append(f"traceback ({type(res.exception).__name__})")
        left = _tree(root) - before
        if left:
            problems.append(f"left {sorted(left)[:3]}")
            for p in sorted(left, reverse=True):
                q = root / p
                shutil.rmtree(q) if q.is_dir() else q.unlink()
        if problems:
            failures.append(f"{case.id}: {', '.join(problems)}; output: {output.strip()[:300]!r}")
    assert not failures, "\n".join(failures)
