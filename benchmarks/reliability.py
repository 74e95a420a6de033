"""Reliability: how the tool treats bad input, damaged artifacts and killed exports.

Three measurements on the tiny random Llama the tests use (no real model is needed):

1. the bad-input table (tests/bad_inputs.py) through the CLI in-process (typer's runner): each case
   must exit 2 with one `error:` line naming the problem, no traceback, nothing left on disk;
2. artifact fuzzing: random damage to exported artifacts (byte flips, truncations, appended bytes,
   deleted files, manifest edits with and without a recomputed checksum, newer versions, broken JSON),
   each loaded with `load_artifact`: refused with one line, a traceback (any other exception), or
   accepted, and then whether the weights are the original ones (accepted unchanged) or not
   (silently accepted);
3. killed exports: `qmc export --force` in a subprocess, SIGKILLed at a random moment, then a normal
   export to the same place: what was left behind before it, what after, and whether `-o` verifies.

Writes benchmarks/results/reliability.json and benchmarks/reliability.md (stitched into BENCHMARKS.md
by render.py). Usage: python benchmarks/reliability.py [--fuzz 200] [--kills 12] [--fuzz-seed 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the shared bad-input table and the tiny model builders

from bad_inputs import cases  # noqa: E402
from common import machine_label  # noqa: E402
from conftest import build_tiny_llama, build_tokenizer, synthetic_text  # noqa: E402


def tiny_model(root: Path) -> tuple[Path, Path]:
    text = root / "tiny.txt"
    text.write_text(synthetic_text(), encoding="utf-8")
    tok = build_tokenizer(text.read_text(encoding="utf-8"))
    model = build_tiny_llama(len(tok))
    d = root / "tiny-llama"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d, text


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def bad_inputs(root: Path, model_dir: Path, text: Path) -> dict:
    from typer.testing import CliRunner

    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.cli.app import app
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model
    from qmc_edge.model.loading import load_model

    root.mkdir(parents=True, exist_ok=True)
    lm = load_model(str(model_dir))
    spec = parse_method("rtn4")
    export_artifact(lm, spec, quantize_model(lm.model, spec), root / "artifact")
    copy = root / "my_platform.yaml"
    shutil.copy(ROOT / "src" / "qmc_edge" / "platforms" / "orin_agx.yaml", copy)
    table = cases(root, model_dir, text, root / "artifact", copy)
    runner = CliRunner()
    counts = {"tried": 0, "refused_cleanly": 0, "tracebacks": 0, "silently_accepted": 0, "unclear": 0, "debris": 0}
    bad: list[str] = []
    cwd = os.getcwd()
    os.chdir(root)
    try:
        before = _tree(root)
        for case in table:
            counts["tried"] += 1
            res = runner.invoke(app, case.argv)
            lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
            left = _tree(root) - before
            if left:
                counts["debris"] += 1
                bad.append(f"{case.id}: left {sorted(left)[:2]}")
                for p in sorted(left, reverse=True):
                    q = root / p
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
            if res.exception is not None and not isinstance(res.exception, SystemExit):
                counts["tracebacks"] += 1
                bad.append(f"{case.id}: {type(res.exception).__name__}")
            elif res.exit_code == 0:
                counts["silently_accepted"] += 1
                bad.append(f"{case.id}: accepted")
            elif res.exit_code == 2 and len(lines) == 1 and case.needle in res.output:
                counts["refused_cleanly"] += 1
            else:
                counts["unclear"] += 1
                bad.append(f"{case.id}: exit {res.exit_code}, {len(lines)} error lines: {res.output.strip()[:160]}")
    finally:
        os.chdir(cwd)
    return {**counts, "problems": bad}


def fuzz(root: Path, model_dir: Path, n: int, seed: int) -> dict:
    import torch
    from test_artifact_fuzz import _damage

    from qmc_edge.artifact.export import export_artifact
    from qmc_edge.artifact.load import load_artifact
    from qmc_edge.errors import QMCError
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model
    from qmc_edge.model.loading import load_model

    out: dict[str, dict] = {}
    for m in ("qmc:bits=3,cell_bits=2", "mxint4", "emem3"):
        lm = load_model(str(model_dir))
        spec = parse_method(m)
        src = export_artifact(lm, spec, quantize_model(lm.model, spec), root / f"fz-{spec.method}").path
        weights = {k: p.detach().clone() for k, p in load_artifact(src).model.named_parameters()}
        rng = random.Random(f"{seed}-{m}")
        c = {"tried": 0, "refused": 0, "tracebacks": 0, "accepted_unchanged": 0, "silently_accepted": 0}
        kinds: dict[str, int] = {}
        problems = []
        for i in range(n):
            dst = root / f"fz-case-{i}"
            shutil.copytree(src, dst)
            what = _damage(rng, dst)
            kind = what.split()[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            c["tried"] += 1
            try:
                got = load_artifact(dst)
            except QMCError as exc:
                c["refused"] += 1
                if "\n" in str(exc):
                    problems.append(f"{what}: multi-line message")
            except Exception as exc:  # noqa: BLE001 - what is being counted
                c["tracebacks"] += 1
                problems.append(f"{what}: {type(exc).__name__}")
            else:
                same = all(torch.equal(p, weights[k]) for k, p in got.model.named_parameters())
                c["accepted_unchanged" if same else "silently_accepted"] += 1
                problems.append(f"{what}: accepted ({'same weights' if same else 'DIFFERENT weights'})")
            shutil.rmtree(dst)
        out[spec.name] = {**c, "kinds": kinds, "problems": problems}
    return out


def kills(root: Path, model_dir: Path, n: int, seed: int) -> dict:
    from qmc_edge.artifact.load import verify_artifact

    dest = root / "killed" / "art"
    dest.parent.mkdir()
    cmd = [sys.executable, "-m", "qmc_edge.cli.app", "export", "--model", str(model_dir), "-m", "qmc3", "-o", str(dest)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--force"], check=True, capture_output=True)
    full = time.perf_counter() - t0
    rng = random.Random(seed)
    runs = []
    for _ in range(n):
        proc = subprocess.Popen([*cmd, "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.3 * full, 1.05 * full)
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        left_before = sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)
        intact = dest.is_dir() and _verifies(verify_artifact, dest)
        res = subprocess.run([*cmd, "--force"], capture_output=True, text=True)
        left_after = sorted(p.name for p in dest.parent.iterdir() if p.name != dest.name)
        runs.append(
            {
                "killed_after_s": round(delay, 2),
                "finished_before_kill": finished,
                "artifact_at_o_after_kill": intact,
                "left_after_kill": left_before,
                "next_export_ok": res.returncode == 0,
                "next_export_notes": [ln for ln in res.stderr.splitlines() if "note:" in ln],
                "left_after_next_export": left_after,
                "verifies_after": _verifies(verify_artifact, dest),
            }
        )
    summary = {
        "kills": sum(not r["finished_before_kill"] for r in runs),
        "o_missing_or_broken_after_kill": sum(not r["artifact_at_o_after_kill"] for r in runs),
        "debris_after_kill": sum(bool(r["left_after_kill"]) for r in runs),
        "debris_after_next_export": sum(bool(r["left_after_next_export"]) for r in runs),
        "next_export_failed": sum(not r["next_export_ok"] for r in runs),
        "full_export_seconds": round(full, 2),
    }
    return {"summary": summary, "runs": runs}


def _verifies(verify, path: Path) -> bool:
    try:
        verify(path)
        return True
    except Exception:  # noqa: BLE001
        return False


def render(d: dict) -> str:
    b = d["bad_inputs"]
    lines = [
        "## Reliability: bad input, damaged artifacts, killed exports",
        "",
        f"- command: `{d['command']}`",
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min",
        "- model: the tests' tiny random Llama (2 layers, hidden 64); the checks do not depend on the weights",
        "",
        "**Bad input** (the table in `tests/bad_inputs.py`, through the CLI in-process): each case must exit 2",
        "with one `error:` line naming the problem, no traceback and nothing left on disk.",
        "",
        "| cases tried | refused cleanly | tracebacks | silently accepted | unclear message | debris left |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {b['tried']} | {b['refused_cleanly']} | {b['tracebacks']} | {b['silently_accepted']} | {b['unclear']} "
        f"| {b['debris']} |",
        "",
        "**Artifact fuzzing** (`load_artifact` on randomly damaged copies; kinds: byte flip, truncation, appended "
        "bytes, deleted file, manifest edit with and without a recomputed checksum, newer format, broken JSON). "
        "Accepted-unchanged means the damage touched nothing that is read (none expected).",
        "",
        "| artifact | damaged copies | refused (one line) | tracebacks | accepted, same weights | silently accepted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, f in d["fuzz"].items():
        lines.append(
            f"| {name} | {f['tried']} | {f['refused']} | {f['tracebacks']} | {f['accepted_unchanged']} "
            f"| {f['silently_accepted']} |"
        )
    k = d["kills"]["summary"]
    lines += [
        "",
        f"**Killed exports**: `qmc export --force` SIGKILLed at a random moment between 30% and 105% of a full "
        f"export ({k['full_export_seconds']} s), then exported again to the same `-o`.",
        "",
        "| runs | killed | `-o` missing or broken after the kill | debris after the kill "
        "| debris after the next export | next export failed |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(d['kills']['runs'])} | {k['kills']} | {k['o_missing_or_broken_after_kill']} "
        f"| {k['debris_after_kill']} | {k['debris_after_next_export']} | {k['next_export_failed']} |",
        "",
        "Debris after a kill (a hidden `.NAME.tmp-PID-*` build folder, `.NAME.old-PID-*` or lock file) is expected: a "
        "SIGKILL runs no cleanup. The next export to the same place removes what dead processes left and says so.",
    ]
    probs = b["problems"] + [p for f in d["fuzz"].values() for p in f["problems"]]
    if probs:
        lines += ["", "Cases that did not meet the target:", ""] + [f"- {p}" for p in probs[:30]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz", type=int, default=200, help="damaged copies per artifact kind")
    ap.add_argument("--kills", type=int, default=12, help="killed exports")
    ap.add_argument("--fuzz-seed", type=int, default=0, help="seed of the random damage and kill times")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qmc-reliability-") as tmp:
        root = Path(tmp)
        model_dir, text = tiny_model(root)
        d = {
            "command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
            "date": dt.date.today().isoformat(),
            "machine": machine_label(),
            "bad_inputs": bad_inputs(root / "bad", model_dir, text),
            "fuzz": fuzz(root, model_dir, args.fuzz, args.fuzz_seed),
            "kills": kills(root, model_dir, args.kills, args.fuzz_seed),
        }
    d["wall_seconds"] = time.perf_counter() - t0
    from qmc_edge.provenance import code_revision

    d["code"] = code_revision()
    res = HERE / "results" / "reliability.json"
    tmp_json = res.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    tmp_json.replace(res)
    md = HERE / "reliability.md"
    md.with_suffix(".md.tmp").write_text(render(d), encoding="utf-8")
    md.with_suffix(".md.tmp").replace(md)
    import render as page

    page.render()
    print(render(d))


if __name__ == "__main__":
    main()
