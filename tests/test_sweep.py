"""`qmc sweep` / `qmc report`: spec validation, resumable store, failures recorded, Ray = local."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from conftest import SHARED_DATA
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.errors import QMCError
from qmc_edge.sweep import run as run_mod
from qmc_edge.sweep.report import pareto, write_report
from qmc_edge.sweep.spec import EXAMPLE, SweepSpec, expand, load_sweep_spec, method_texts
from qmc_edge.sweep.store import SCHEMA, Store


def _spec(model: str, **over) -> SweepSpec:
    data = {
        "name": "tiny",
        "models": [model],
        "methods": ["fp", "rtn4"],
        "grids": [{"method": "qmc", "options": {"bits": [3], "rho": [0.01, 0.02]}}],
        "eval": {"perplexity": {"context": 32, "windows": 2}, "seeds": 2},
        "platforms": ["orin_agx", "qmc_hetero"],
    }
    data.update(over)
    return SweepSpec.model_validate(data)


def test_grids_expand_as_products_and_keys_change_with_what_changes_results(tiny_model_dir):
    s = _spec(str(tiny_model_dir))
    assert method_texts(s) == ["fp", "rtn4", "qmc:bits=3,rho=0.01", "qmc:bits=3,rho=0.02"]
    aged = _spec(str(tiny_model_dir), methods=["qmc3"], grids=[{"method": "qmc", "options": {"age": [None, "1d"]}}])
    assert method_texts(aged) == ["qmc3", "qmc", "qmc:age=1d"]  # null = the default, left out
    assert len(expand(aged)) == 2  # qmc3 and qmc are one configuration: one point
    pts = expand(s)
    assert len({p.key for p in pts}) == 4
    assert [p.key for p in expand(s)] == [p.key for p in pts]  # stable
    other = expand(_spec(str(tiny_model_dir), eval={"perplexity": {"context": 32, "windows": 3}, "seeds": 2}))
    assert not {p.key for p in pts} & {p.key for p in other}  # more windows: a new result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nmodels: [embedded]\n", "names no method"),
        ("name: x\nmodels: [embedded]\nmethods: [fp]\neval: {seeds: 0}\n", "eval.seeds: must be >= 1"),
        ("name: x\nmodels: [embedded]\nmethods: [fp]\nmodels: [y]\n", "duplicate key 'models'"),
        ("name: x\nmodels: [embedded]\nmethods: [fp]\ncolour: red\n", "colour: unknown field"),
    ],
)
def test_bad_spec_is_one_line(tmp_path, text, message):
    p = tmp_path / "s.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(QMCError) as e:
        load_sweep_spec(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_example_spec_is_valid(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(EXAMPLE, encoding="utf-8")
    s = load_sweep_spec(p)
    assert s.name and s.grids and s.eval.tasks is not None


def test_local_sweep_resumes_records_failures_and_keeps_the_schema(tiny_model_dir, tmp_path, monkeypatch):
    spec = _spec(str(tiny_model_dir))
    points = expand(spec)
    store = Store(tmp_path / "store").create()
    calls: list[str] = []
    real = run_mod.run_point

    def counting(ctx, p, s, device="cpu", origin="qmc sweep"):
        calls.append(p.method_text)
        if p.method_text == "rtn4":
            raise RuntimeError("injected\nfailure")
        return real(ctx, p, s, device, origin)

    monkeypatch.setattr(run_mod, "run_point", counting)

    # Killed after the first point completes: the store holds exactly that point.
    def kill(done, failed, skipped, total, label):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_mod.run_local(spec, points, store, kill)
    assert len(store.done()) == 1 and calls == ["fp"]
    assert not list(store.points.glob(".*"))  # no temporary file left behind
    summary = run_mod.run_local(spec, points, store)
    assert calls == ["fp", "rtn4", "qmc:bits=3,rho=0.01", "qmc:bits=3,rho=0.02"]  # nothing computed twice
    assert summary.skipped == 1 and summary.done == 2 and len(summary.failed) == 1
    (f,) = store.failed().values()
    assert f["method"] == "rtn4" and f["error"] == "RuntimeError: injected failure"
    again = run_mod.run_local(spec, points, store)
    assert again.skipped == 3 and again.done == 0 and calls[-1] == "rtn4"  # only the failed point retried
    table = store.read()
    assert table.column_names == list(SCHEMA)
    rows = table.to_pylist()
    # fp is deterministic: one row; each QMC point: one row per seed, each a different chip.
    assert sorted((r["method_text"], r["seed"]) for r in rows) == [
        ("fp", None),
        ("qmc:bits=3,rho=0.01", 0),
        ("qmc:bits=3,rho=0.01", 1),
        ("qmc:bits=3,rho=0.02", 0),
        ("qmc:bits=3,rho=0.02", 1),
    ]
    q = [r for r in rows if r["method_text"] == "qmc:bits=3,rho=0.01"]
    assert q[0]["ppl"] != q[1]["ppl"] and q[0]["whole_model_bits"] < 16 and q[0]["noisy"]
    assert q[0]["machine"].endswith("CPU") and q[0]["origin"] == "qmc sweep" and q[0]["windows_available"] >= 1
    assert q[0]["text"]  # the perplexity text's label
    d = json.loads(q[0]["deploy_json"])
    assert set(d) == {"orin_agx", "qmc_hetero"} and d["qmc_hetero"]["energy_mJ_per_token"] > 0
    files = write_report(store.root)
    assert files["frontier"].stat().st_size > 0
    md = files["markdown"].read_text(encoding="utf-8")
    assert "3 points done, 1 failed" in md and "injected failure" in md and "`whole_model_bits`" in md
    assert "<table>" in files["html"].read_text(encoding="utf-8")


def test_pareto_keeps_only_undominated_points():
    assert pareto([(3, 10), (2, 20), (4, 5), (5, 6), (1, 30)]) == [(1, 30), (2, 20), (3, 10), (4, 5)]


def test_ray_local_mode_gives_the_local_numbers(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    from qmc_edge.sweep.ray_executor import run_ray

    spec = _spec(str(tiny_model_dir), methods=["fp"], grids=[{"method": "qmc", "options": {"rho": [0.01]}}])
    points = expand(spec)
    local = Store(tmp_path / "local").create()
    run_mod.run_local(spec, points, local)
    ray_store = Store(tmp_path / "ray").create()
    s = run_ray(spec, points, ray_store, workers=2)
    assert s.done == 2 and not s.failed
    key = lambda r: (r["key"], r["seed"])  # noqa: E731
    a = sorted(local.read().to_pylist(), key=key)
    b = sorted(ray_store.read().to_pylist(), key=key)
    assert [key(r) for r in a] == [key(r) for r in b]
    for x, y in zip(a, b, strict=True):
        # Same seeds, same chips; only the thread count differs (summation order): equal to 1e-5.
        assert y["ppl"] == pytest.approx(x["ppl"], rel=1e-5) and y["storage_json"] == x["storage_json"]


def test_qmc_sweep_cli_dry_run_run_and_report(tiny_model_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    data = _spec(str(tiny_model_dir), methods=["fp"], grids=[]).model_dump()
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    store = tmp_path / "st"
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store), "--dry-run"])
    assert r.exit_code == 0 and "1 points, 0 already" in r.output and "todo" in r.output
    assert not store.exists()  # a dry run writes nothing
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
    assert r.exit_code == 0, r.output
    assert "done 1, skipped 0" in r.output and (store / "sweep.yaml").is_file()
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
    assert "done 0, skipped 1" in r.output
    r = CliRunner().invoke(app, ["report", str(store)])
    assert r.exit_code == 0 and "report.html" in r.output
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code != 0 and "not a results store" in r.output
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store), "--executor", "dask"])
    assert r.exit_code != 0 and "--executor must be local or ray" in r.output


@pytest.mark.skipif(not (SHARED_DATA / "arc").is_dir(), reason="../shared/data not present")
def test_task_rows_keep_each_seeds_accuracy_and_its_stderr(tiny_model_dir, tmp_path):
    spec = _spec(
        str(tiny_model_dir),
        methods=["fp"],
        grids=[{"method": "qmc", "options": {"rho": [0.01]}}],
        eval={"perplexity": None, "tasks": {"names": ["arc_easy"], "limit": 6}, "seeds": 2},
    )
    store = Store(tmp_path / "st").create()
    assert run_mod.run_local(spec, expand(spec), store).done == 2
    rows = [r for r in store.read().to_pylist() if r["family"] == "qmc"]
    assert len(rows) == 2 and all(r["ppl"] is None and r["text"] is None for r in rows)
    t = [json.loads(r["tasks_json"])["arc_easy"] for r in rows]
    for m in t:
        assert m["n"] == 6 and 0 <= m["acc"] <= 1 and 0 <= m["acc_norm"] <= 1 and m["items_per_s"] > 0
        # lm-eval's stderr of a mean of 0/1 items: sqrt(p (1 - p) / (n - 1))
        assert m["acc_stderr"] == pytest.approx((m["acc"] * (1 - m["acc"]) / 5) ** 0.5)


def test_a_models_identity_is_its_bytes_not_its_path(tmp_path):
    from qmc_edge.sweep.spec import model_identity

    a = tmp_path / "a" / "m.gguf"
    b = tmp_path / "b" / "m.gguf"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"weights" * 1000)
    assert model_identity(str(a)) == model_identity(str(b))  # copied elsewhere: the same model
    st = b.stat()
    b.write_bytes(b"weightz" * 1000)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later write, on any file system's clock
    assert model_identity(str(a)) != model_identity(str(b))  # same size and name, other bytes


def test_a_damaged_point_is_reported_left_out_and_recomputed(tiny_model_dir, tmp_path):
    """A store is validated, not trusted by its file names: a truncated file, a non-Parquet file, a
    copied point, a point of another schema and one with a row missing its sweep are each reported by
    `qmc report`, left out of every table, and recomputed by the next `qmc sweep`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(str(tiny_model_dir), methods=["fp"], grids=[]).model_dump()), "utf-8")
    store = tmp_path / "st"
    assert CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)]).exit_code == 0
    st = Store(store)
    (key,) = st.done()
    good = st.points / f"{key}.parquet"
    table = pq.read_table(good)

    def as_point(name: str):  # the valid rows, saying they are point `name`
        return table.set_column(table.schema.get_field_index("key"), "key", pa.array([name]))

    def with_column(t, col: str, values):
        return t.set_column(t.schema.get_field_index(col), col, values)

    cases = {
        "bad0": lambda p: p.write_bytes(good.read_bytes()[:100]),  # truncated
        "bad1": lambda p: p.write_text("hello", "utf-8"),  # not Parquet at all
        "bad2": lambda p: p.write_bytes(good.read_bytes()),  # a copy: its rows say they are another point
        "bad3": lambda p: pq.write_table(with_column(as_point("bad3"), "ppl", pa.array(["x"])), p),
        "bad4": lambda p: pq.write_table(as_point("bad4").drop(["deploy_json"]), p),
        "bad5": lambda p: pq.write_table(with_column(as_point("bad5"), "sweep", pa.array([None], pa.string())), p),
    }
    for name, damage in cases.items():
        damage(st.points / f"{name}.parquet")
    valid, damaged = st.scan()
    assert set(valid) == {key}
    assert set(damaged) == set(cases)
    reasons = " | ".join(damaged[k] for k in sorted(cases))
    for needle in ("not a Parquet point", "another point", "ppl is string", "missing columns deploy_json", "sweep"):
        assert needle in reasons, (needle, reasons)
    assert len(st.read().to_pylist()) == 1  # only the valid point's row
    r = CliRunner().invoke(app, ["report", str(store)])
    assert r.exit_code == 0 and r.output.count("damaged point") == len(cases), r.output
    assert "6 damaged point files are left out" in (store / "report.md").read_text("utf-8")
    # The valid point damaged in place: the next sweep recomputes it (and only it).
    good.write_bytes(good.read_bytes()[:50])
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
    assert r.exit_code == 0 and "1 damaged point files" in r.output and "done 1, skipped 0" in r.output, r.output
    assert key in Store(store).done()


def test_one_writer_per_store_and_a_killed_writes_leftovers_are_cleared(tiny_model_dir, tmp_path):
    """Two sweeps into one store: the second is refused in one line while the first holds it (instead of
    computing every point twice); the temporary file of a point whose write was killed is removed by
    the next writer; a spec that is the store's own copy is not copied onto itself."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(_spec(str(tiny_model_dir), methods=["fp"], grids=[]).model_dump()), "utf-8")
    store = tmp_path / "st"
    st = Store(store).create()
    leftover = st.points / ".abc.parquet.x1y2"  # what a write killed before its rename leaves
    leftover.write_bytes(b"half a point")
    with st.locked():
        r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
        assert r.exit_code == 2 and "is in use by another qmc sweep (pid" in r.output, r.output
        assert "Traceback" not in r.output and not list(st.points.glob("*.parquet"))
    r = CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)])
    assert r.exit_code == 0 and "done 1" in r.output, r.output
    assert not leftover.exists()
    r = CliRunner().invoke(app, ["sweep", str(store / "sweep.yaml"), "--store", str(store)])
    assert r.exit_code == 0 and "done 0, skipped 1" in r.output, r.output


def test_report_tables_keep_labels_with_pipes_in_one_cell(tiny_model_dir, tmp_path):
    spec = tmp_path / "s.yaml"
    data = _spec(str(tiny_model_dir), methods=["rtn:bits=4,label=a|b"], grids=[]).model_dump()
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    store = tmp_path / "st"
    assert CliRunner().invoke(app, ["sweep", str(spec), "--store", str(store)]).exit_code == 0
    md = write_report(store)["markdown"].read_text(encoding="utf-8")
    (row,) = [ln for ln in md.splitlines() if "a\\|b" in ln]
    head = next(ln for ln in md.splitlines() if ln.startswith("| ") and "a\\|b" not in ln)
    assert row.replace("\\|", "").count("|") == head.count("|")  # as many cells as the header
