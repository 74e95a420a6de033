"""Export safety: a failed, interrupted or killed export never leaves a destination that looks
complete unless it is the old artifact, never loses the old artifact, leaves no debris (or has it
removed by the next export), two exports to one destination are serialised by a lock, bad
destinations are refused before the model loads, and files the manifest does not list are refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import qmc_edge.artifact.export as ex
from qmc_edge.artifact import MANIFEST_NAME, fsutil
from qmc_edge.artifact.export import check_destination, export_artifact
from qmc_edge.artifact.fsutil import export_lock
from qmc_edge.artifact.hf_export import export_hf
from qmc_edge.artifact.load import load_artifact, read_artifact, verify_artifact
from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model


@pytest.fixture(scope="module")
def lmq(tiny_model_dir):
    """The tiny model with an old (rtn4) and a new (mxint4) quantization to export."""
    from qmc_edge.model.loading import load_model

    lm = load_model(str(tiny_model_dir))
    old, new = parse_method("rtn4"), parse_method("mxint4")
    return lm, (old, quantize_model(lm.model, old)), (new, quantize_model(lm.model, new))


def _snapshot(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its sha256 (byte-for-byte identity of an artifact)."""
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _forbid_model_loading(monkeypatch) -> list:
    """Make every model loader fail the test; returns the list of attempted loads (must stay empty)."""
    import qmc_edge.cli.common as cc
    import qmc_edge.model.loading as mio

    calls: list = []

    def no_load(*a, **k):
        calls.append(a)
        raise AssertionError("the model was loaded before the destination was checked")

    monkeypatch.setattr(mio, "load_model", no_load)
    for name in ("load", "_load"):
        if callable(getattr(cc, name, None)):
            monkeypatch.setattr(cc, name, no_load)
    return calls


def _run(*args):
    from qmc_edge.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(r) -> str:
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error:") and "Traceback" not in r.output, r.output
    return text


# --- failure injection at every write step -----------------------------------------------------


def _inject(mp, owner, attr: str, k: int, exc: BaseException, when=None) -> list[int]:
    """Make the k-th call of ``owner.attr`` (counting those ``when`` selects) raise ``exc``."""
    real = getattr(owner, attr)
    calls = [0]

    def wrapper(*a, **kw):
        if when is None or when(*a, **kw):
            calls[0] += 1
            if calls[0] == k:
                raise exc
        return real(*a, **kw)

    mp.setattr(owner, attr, wrapper)
    return calls


def _step(mp, step: str, k: int, exc: BaseException, lm, force: bool) -> list[int]:
    import safetensors.torch

    if step.endswith("_fallback"):  # no renameat2: two plain renames (and their undo)
        mp.setattr(fsutil, "renameat2", lambda *a: False)

    if step == "save_file":
        return _inject(mp, safetensors.torch, "save_file", k, exc)
    if step == "config":
        return _inject(mp, type(lm.model.config), "save_pretrained", k, exc)
    if step == "tokenizer":
        return _inject(mp, type(lm.tokenizer), "save_pretrained", k, exc)
    if step == "manifest":  # the manifest's rename into place, after its .partial was written
        return _inject(mp, os, "replace", k, exc, when=lambda src, dst, *a, **kw: str(dst).endswith(MANIFEST_NAME))
    if step.startswith("fsync"):  # every file, the temp dir, and the folder after the final rename
        return _inject(mp, ex, "fsync_path", k, exc)
    if step == "rename":  # the exchange (--force) or the no-replace rename
        return _inject(mp, ex, "exchange" if force else "rename_noreplace", k, exc)
    if step == "rename_fallback":
        return _inject(mp, os, "rename", k, exc)
    raise AssertionError(step)


STEPS = ["save_file", "config", "tokenizer", "manifest", "fsync", "rename", "fsync_fallback", "rename_fallback"]


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
@pytest.mark.parametrize("exc", [OSError(5, "injected I/O error"), KeyboardInterrupt()], ids=["oserror", "ctrl-c"])
@pytest.mark.parametrize("step", STEPS)
def test_failure_at_each_write_step_leaves_old_or_nothing(lmq, tmp_path, monkeypatch, step, exc, force):
    lm, (old_spec, old_qm), (new_spec, new_qm) = lmq
    d = tmp_path / "d"
    d.mkdir()
    out = d / "out"
    before = None
    if force:
        export_artifact(lm, old_spec, old_qm, out)
        before = _snapshot(out)
    failures = 0
    for k in range(1, 40):
        with monkeypatch.context() as mp:
            calls = _step(mp, step, k, exc, lm, force)
            try:
                export_artifact(lm, new_spec, new_qm, out, force=force)
            except (OSError, KeyboardInterrupt) as e:
                assert e is exc, f"call {k} of {step}: unexpected {e!r}"
                failed = True
            else:
                failed = False
                assert calls[0] < k, f"{step}: the injected failure at call {k} was swallowed"
        if not failed:
            break
        failures += 1
        # Nothing but the old artifact, byte for byte, and no debris (temp dir, lock, old copy).
        assert sorted(os.listdir(d)) == (["out"] if force else []), f"{step} call {k}"
        if force:
            assert _snapshot(out) == before, f"{step} call {k}: the old artifact changed"
            verify_artifact(out)
    assert failures >= 1, f"{step}: never reached"
    assert sorted(os.listdir(d)) == ["out"]
    assert read_artifact(out).spec == new_spec


def test_failed_export_releases_the_lock(lmq, tmp_path, monkeypatch):
    lm, _, (spec, qm) = lmq

    def disk_full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "manifest_text", disk_full)
    with pytest.raises(OSError):
        export_artifact(lm, spec, qm, tmp_path / "out")
    assert not fsutil.lock_path(tmp_path / "out").exists()
    with export_lock(tmp_path / "out") as lk:  # free again
        assert lk.depth == 1 and fsutil.lock_path(tmp_path / "out").read_text().strip() == str(os.getpid())
    assert os.listdir(tmp_path) == []


# --- real kills -------------------------------------------------------------------------------

_CHILD = r"""
import os, sys, time
from pathlib import Path
model_dir, out, point, force = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
import safetensors.torch
import qmc_edge.artifact.export as ex
from qmc_edge.artifact import fsutil
from qmc_edge.methods import parse_method
from qmc_edge.model.loading import load_model
from qmc_edge.methods.whole_model import quantize_model

def stall():
    print("stalled", flush=True)
    time.sleep(120)

if point == "tmp":  # after the first tensor file is written
    real_save = safetensors.torch.save_file
    def save(*a, **k):
        real_save(*a, **k)
        stall()
    safetensors.torch.save_file = save
elif point == "complete":  # the temp dir holds a complete artifact, not yet renamed
    real_replace = ex.replace_dir
    def replace(tmp, dst):
        stall()
        real_replace(tmp, dst)
    ex.replace_dir = replace
elif point == "between_renames":  # no RENAME_EXCHANGE: the old artifact is moved aside, the new not in
    fsutil.renameat2 = lambda *a: False
    real_rename = os.rename
    def rename(a, b):
        real_rename(a, b)
        if ".old-" in str(b):
            stall()
    os.rename = rename
lm = load_model(model_dir)
spec = parse_method("mxint4")
ex.export_artifact(lm, spec, quantize_model(lm.model, spec), out, force=force)
print("finished", flush=True)
"""


def _start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd()
    )


def _wait_line(proc: subprocess.Popen, want: str, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            line = proc.stdout.readline()
            if want in line:
                return
            if not line and proc.poll() is not None:
                break
    proc.kill()
    pytest.fail(f"child never printed {want!r}: {proc.stderr.read()[-2000:]}")


# One real SIGKILL, at the hardest point (between the two renames of a forced export); the in-process
# failure injection above covers every write step, and the dead-owner cleanup below every kind of debris.
@pytest.mark.parametrize("point", ["between_renames"])
def test_sigkill_debris_is_removed_by_the_next_export(lmq, tiny_model_dir, tmp_path, point):
    lm, (old_spec, old_qm), (new_spec, new_qm) = lmq
    d = tmp_path / "d"
    d.mkdir()
    out = d / "out"
    force = point == "between_renames"
    if force:
        export_artifact(lm, old_spec, old_qm, out)
        before = _snapshot(out)
    proc = _start(_CHILD, str(tiny_model_dir), str(out), point, "1" if force else "0")
    _wait_line(proc, "stalled")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    left = sorted(os.listdir(d))
    tmp = [n for n in left if n.startswith(f".out.tmp-{proc.pid}-")]
    assert len(tmp) == 1, left  # what the kill left: the temp dir (and the lock file)
    assert (d / tmp[0] / MANIFEST_NAME).exists() == (point != "tmp")
    if force:  # killed between the two renames: out is missing, the old artifact sits hidden
        assert "out" not in left and any(n.startswith(f".out.old-{proc.pid}-") for n in left), left
        with pytest.raises(QMCError, match="already holds an artifact"):
            export_artifact(lm, new_spec, new_qm, out)  # the old one is put back first, so refused
        assert _snapshot(out) == before and sorted(os.listdir(d)) == ["out"]
        verify_artifact(out)
        export_lock_notes: list[str] = []
        with export_lock(out, on_note=export_lock_notes.append):
            pass
        assert export_lock_notes == []  # nothing left to clean
    res = export_artifact(lm, new_spec, new_qm, out, force=force)
    if not force:
        assert any(tmp[0] in n and "removed" in n and f"pid {proc.pid}" in n for n in res.notes), res.notes
    assert sorted(os.listdir(d)) == ["out"]
    assert read_artifact(out).spec == new_spec


def test_between_renames_restore_is_reported(lmq, tmp_path):
    """A stranded .out.old-PID-* (dead PID) with out missing is moved back, with a note."""
    lm, (old_spec, old_qm), (new_spec, new_qm) = lmq
    out = tmp_path / "out"
    export_artifact(lm, old_spec, old_qm, out)
    before = _snapshot(out)
    pid = _dead_pid()
    os.rename(out, tmp_path / f".out.old-{pid}-abcd1234")
    shutil.copytree(tmp_path / f".out.old-{pid}-abcd1234", tmp_path / f".out.tmp-{pid}-efgh5678")
    notes: list[str] = []
    with pytest.raises(QMCError, match="--force"), export_lock(out, False, check_destination, notes.append):
        pass
    assert _snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["out"]
    assert any(n.startswith(f"restored {out}") and f"pid {pid}" in n for n in notes), notes
    assert any(f".out.tmp-{pid}-efgh5678" in n and "removed" in n for n in notes), notes


def test_sigterm_cleans_up(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    proc = _start(_CHILD, str(tiny_model_dir), str(out), "tmp", "0")
    _wait_line(proc, "stalled")
    assert any(n.startswith(".out.tmp-") for n in os.listdir(tmp_path))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert os.listdir(tmp_path) == []  # temp dir and lock file removed by the dying process


def test_only_dead_owners_debris_is_removed(lmq, tmp_path):
    lm, _, (spec, qm) = lmq
    out = tmp_path / "out"
    dead, alive = _dead_pid(), os.getppid()
    names = [f".out.tmp-{dead}-aaaaaaaa", f".out.tmp-{alive}-bbbbbbbb", ".out.tmp-cccccccc"]
    names += [f".out.tmp-{os.getpid()}-dddddddd", f".out.probe-{dead}-eeeeeeee", f".other.tmp-{dead}-ffffffff"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_bytes(b"0" * 1000)
    res = export_artifact(lm, spec, qm, out)
    left = sorted(os.listdir(tmp_path))
    # dead owner, and this process's own dir that it is not building: removed; a live owner, an
    # unknown owner (older qmc-edge) and another destination's dir: kept, the first two reported.
    assert left == sorted([f".other.tmp-{dead}-ffffffff", ".out.tmp-cccccccc", f".out.tmp-{alive}-bbbbbbbb", "out"])
    removed = [n for n in res.notes if n.startswith("removed")]
    assert len(removed) == 3 and all("no longer running" in n for n in removed), res.notes
    assert any("older qmc-edge" in n and ".out.tmp-cccccccc" in n for n in res.notes)
    assert any(f"pid {alive}) is still running" in n for n in res.notes)


# --- the lock ---------------------------------------------------------------------------------

_HOLDER = r"""
import sys
from qmc_edge.artifact.fsutil import export_lock
with export_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_second_export_is_refused_while_one_runs(lmq, tiny_model_dir, tmp_path, monkeypatch):
    lm, _, (spec, qm) = lmq
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_line(holder, "locked")
        msg = f"another export to {out} is running (pid {holder.pid}); wait for it or choose another --out"
        with pytest.raises(QMCError) as e:
            export_artifact(lm, spec, qm, out)
        assert str(e.value) == msg
        with pytest.raises(QMCError, match=f"pid {holder.pid}"):
            export_hf(lm.model, lm.tokenizer, out)
        assert sorted(os.listdir(tmp_path)) == [".out.lock"]  # nothing written, the holder's lock kept
        loads = _forbid_model_loading(monkeypatch)
        for cmd in ("export", "export-hf"):
            text = _one_error_line(_run(cmd, "--model", tiny_model_dir, "-o", out))
            assert f"another export to {out} is running (pid {holder.pid})" in text
        assert loads == []
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0 and os.listdir(tmp_path) == []  # released and removed
    monkeypatch.undo()
    export_artifact(lm, spec, qm, out)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_lock_held_by_raw_flock_names_its_pid(lmq, tmp_path):
    lm, _, (spec, qm) = lmq
    out = tmp_path / "out"
    with open(fsutil.lock_path(out), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("424242\n")
        f.flush()
        with pytest.raises(QMCError, match=r"another export to .*out is running \(pid 424242\)"):
            export_artifact(lm, spec, qm, out)
    # the holder closed it without removing it (as after a kill): the next export takes it over
    export_artifact(lm, spec, qm, out)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_concurrent_exports_one_wins(lmq, tmp_path, monkeypatch):
    """Two exports to one --out at once, without --force: one writes, the other is refused (never
    both 'succeeding' with the later silently replacing the earlier)."""
    import safetensors.torch

    lm, (s1, q1), (s2, q2) = lmq
    out = tmp_path / "out"
    real = safetensors.torch.save_file
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (time.sleep(0.3), real(*a, **k))[1])
    results: dict[str, object] = {}
    gate = threading.Barrier(2)

    def run(name, spec, qm):
        gate.wait()
        try:
            results[name] = export_artifact(lm, spec, qm, out)
        except QMCError as e:
            results[name] = e

    threads = [threading.Thread(target=run, args=a) for a in (("a", s1, q1), ("b", s2, q2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [r for r in results.values() if isinstance(r, QMCError)]
    assert len(results) == 2 and len(errors) == 1, results
    assert "another export" in str(errors[0]) or "already holds an artifact" in str(errors[0])
    winner = next(r for r in results.values() if not isinstance(r, QMCError))
    assert read_artifact(out).manifest.method_name == winner.manifest.method_name
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_lock_rechecks_the_destination(lmq, tmp_path):
    """An artifact that appeared while the lock was not held is refused without --force."""
    lm, _, (spec, qm) = lmq
    out = tmp_path / "out"
    check_destination(out, False)  # the CLI's early check passes ...
    export_artifact(lm, spec, qm, out)  # ... then another export finishes first
    with pytest.raises(QMCError, match="already holds an artifact"), export_lock(out, False, check_destination):
        pass
    assert sorted(os.listdir(tmp_path)) == ["out"]  # lock released after the refusal


# --- --force: atomic exchange ---------------------------------------------------------------


def test_force_exchange_keeps_the_old_artifact_until_the_swap(lmq, tmp_path, monkeypatch):
    lm, (old_spec, old_qm), (new_spec, new_qm) = lmq
    out = tmp_path / "out"
    export_artifact(lm, old_spec, old_qm, out)
    before = _snapshot(out)
    real = fsutil.exchange
    seen = []

    def spy(a, b):
        assert Path(b) == out and _snapshot(out) == before  # untouched up to the swap
        verify_artifact(out)
        assert read_artifact(a).spec == new_spec  # the new one is complete before it goes in
        done = real(a, b)
        seen.append(done)
        assert read_artifact(out).spec == new_spec and _snapshot(a) == before  # swapped whole
        return done

    monkeypatch.setattr(ex, "exchange", spy)
    export_artifact(lm, new_spec, new_qm, out, force=True)
    assert seen == [True]  # RENAME_EXCHANGE is available here (Linux)
    assert read_artifact(out).spec == new_spec and sorted(os.listdir(tmp_path)) == ["out"]


def test_force_fallback_without_exchange(lmq, tmp_path, monkeypatch):
    lm, (old_spec, old_qm), (new_spec, new_qm) = lmq
    out = tmp_path / "out"
    export_artifact(lm, old_spec, old_qm, out)
    monkeypatch.setattr(fsutil, "renameat2", lambda *a: False)
    export_artifact(lm, new_spec, new_qm, out, force=True)
    assert read_artifact(out).spec == new_spec and sorted(os.listdir(tmp_path)) == ["out"]


def test_hf_export_force_and_stale_cleanup(lmq, tmp_path):
    lm, _, _ = lmq
    out = tmp_path / "hf"
    export_hf(lm.model, lm.tokenizer, out)
    before = _snapshot(out)
    pid = _dead_pid()
    stale = tmp_path / f".hf.tmp-{pid}-abcdefgh"
    stale.mkdir()
    notes: list[str] = []
    with pytest.raises(QMCError, match="--force"):
        export_hf(lm.model, lm.tokenizer, out, on_note=notes.append)
    assert _snapshot(out) == before and stale.is_dir() and not notes  # refused before touching anything
    export_hf(lm.model, lm.tokenizer, out, force=True, on_note=notes.append)
    assert (out / "config.json").is_file() and sorted(os.listdir(tmp_path)) == ["hf"]
    assert len(notes) == 1 and notes[0].startswith(f"removed {stale}") and f"pid {pid}" in notes[0], notes


# --- files the manifest does not list --------------------------------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, lmq):
    lm, (spec, qm), _ = lmq
    return export_artifact(lm, spec, qm, tmp_path_factory.mktemp("art") / "a").path


@pytest.mark.parametrize(
    "extra", ["added_tokens.json", "special_tokens_map.json", "stray_dir/", "sub/tokenizer.json", ".hidden"]
)
def test_unlisted_files_are_refused(artifact, tmp_path, extra):
    d = tmp_path / "a"
    shutil.copytree(artifact, d)
    assert extra.rstrip("/") not in read_artifact(d).manifest.files
    target = d / extra
    if extra.endswith("/"):
        target.mkdir()
    else:
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps({"<extra>": 100000}))
    named = d / extra.split("/")[0] if extra.startswith("sub/") else d / extra.rstrip("/")
    for fn in (verify_artifact, load_artifact):
        with pytest.raises(QMCError) as e:
            fn(d)
        msg = str(e.value)
        assert msg.startswith(f"{named}: not listed in the manifest") and "\n" not in msg, msg
    r = _run("verify", d)
    assert "not listed in the manifest" in _one_error_line(r)


def test_tokenizer_is_read_from_listed_files_only(artifact, tmp_path, monkeypatch):
    """The tokenizer is loaded from a folder holding copies of the listed files and nothing else, so
    a file added after verification (between the check and the load) cannot change tokenization."""
    from transformers import AutoTokenizer

    d = tmp_path / "a"
    shutil.copytree(artifact, d)
    real = AutoTokenizer.from_pretrained
    seen = []

    def spy(path, *a, **k):
        seen.append(sorted(os.listdir(path)))
        return real(path, *a, **k)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    art = load_artifact(d)
    listed = sorted(n for n in art.manifest.files if not n.endswith(".safetensors"))
    assert seen == [listed] and art.tokenizer.name_or_path == str(d)


# --- destinations refused before the model loads ------------------------------------------------


def _unwritable_parent(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        os.rmdir(tempfile.mkdtemp(dir=ro))
    except OSError:
        return ro / "out"
    # root ignores the mode bits: use a folder nobody can create in (sysfs), if there is one
    for candidate in (Path("/sys"), Path("/proc")):
        if candidate.is_dir():
            try:
                os.rmdir(tempfile.mkdtemp(dir=candidate))
            except OSError:
                return candidate / "qmc-test-out"
    pytest.skip("no unwritable folder available (root on a system without sysfs)")


@pytest.mark.parametrize("case", ["unwritable", "file", "missing_parent", "not_a_folder_parent"])
@pytest.mark.parametrize("cmd", ["export", "export-hf"])
def test_bad_destination_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch, cmd, case):
    if case == "unwritable":
        out, want = _unwritable_parent(tmp_path), "cannot export to"
    elif case == "file":
        out, want = tmp_path / "out", "exists and is not a"
        out.write_text("mine")
    elif case == "missing_parent":
        out, want = tmp_path / "nope" / "out", "does not exist"
    else:
        (tmp_path / "f").write_text("x")
        out, want = tmp_path / "f" / "out", "is not a folder"
    try:
        loads = _forbid_model_loading(monkeypatch)
        text = _one_error_line(_run(cmd, "--model", tiny_model_dir, "-o", out))
        assert want in text and str(out) in text, text
        assert loads == []
        if case == "file":
            assert out.read_text() == "mine"
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no probe or lock left


def test_writability_is_checked_by_creating_a_folder(tmp_path, monkeypatch):
    """os.access can say yes where nothing can be created (root ignores mode bits; read-only mounts
    for some checks): the check creates and removes a probe folder."""
    from qmc_edge.artifact.hf_export import check_hf_destination

    out = _unwritable_parent(tmp_path)
    try:
        monkeypatch.setattr(os, "access", lambda *a, **k: True)
        for check in (check_destination, check_hf_destination):
            with pytest.raises(QMCError, match=r"cannot create a folder in .*; choose another --out"):
                check(out, False)
    finally:
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)


def test_export_hf_bad_dtype_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    loads = _forbid_model_loading(monkeypatch)
    text = _one_error_line(_run("export-hf", "--model", tiny_model_dir, "-o", tmp_path / "hf", "--dtype", "int8"))
    assert "unknown dtype 'int8'" in text and loads == []
    assert os.listdir(tmp_path) == []


def test_cli_export_reports_stale_cleanup(tiny_model_dir, tmp_path):
    pid = _dead_pid()
    (tmp_path / f".art.tmp-{pid}-abcdefgh").mkdir()
    r = _run("export", "--model", tiny_model_dir, "-m", "rtn4", "-o", tmp_path / "art")
    assert r.exit_code == 0, r.output
    assert f".art.tmp-{pid}-abcdefgh" in r.output.replace("\n", "") and "removed" in r.output
    assert sorted(os.listdir(tmp_path)) == ["art"]
