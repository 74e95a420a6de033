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


def error_message(output: str) -> tuple[str, int]:
    """(the error message, how many there are) in a command's output: our one-line ``error: ...``,
    or click's usage error box (``Usage: ...`` then a box titled Error whose text may wrap). Needles
    are looked for in the message only, not in the usage line or anything else printed."""
    lines = output.splitlines()
    ours = [ln.removeprefix("error:").strip() for ln in lines if ln.startswith("error:")]
    boxes = [i for i, ln in enumerate(lines) if ln.startswith("╭─ Error")]
    if boxes:
        body = []
        for ln in lines[boxes[0] + 1 :]:
            if ln.startswith("╰"):
                break
            body.append(ln.strip("│ ").strip())
        return " ".join(ours + [" ".join(body)]), len(ours) + len(boxes)
    return " ".join(ours), len(ours)


def test_the_error_message_reader():
    assert error_message("note: x\nerror: bad thing; do y\n") == ("bad thing; do y", 1)
    box = (
        "Usage: root ppl [OPTIONS]\nTry 'root ppl --help'\n╭─ Error ──╮\n│ Invalid value for │\n│ '--seeds'  │\n╰──╯\n"
    )
    assert error_message(box) == ("Invalid value for '--seeds'", 1)
    assert error_message("Usage: root ppl [OPTIONS]\n")[1] == 0  # usage alone is no error message
    assert error_message("error: a\nerror: b\n")[1] == 2


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
        message, count = error_message(output)
        problems = []
        if res.exit_code != 2:
            problems.append(f"exit {res.exit_code}")
        if count != 1:
            problems.append(f"{count} error messages")
        if case.needle not in message:
            problems.append(f"no {case.needle!r} in the error message")
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
