"""Filesystem safety for `qmc export` and `qmc export-hf`: one export per destination at a time, an
atomic swap into place, and removal of what killed exports left behind.

Names used next to a destination NAME (all hidden, in NAME's folder):

    .NAME.lock                 flock(2)ed by the export that owns NAME, from before the model loads
                               until NAME is in place; holds the owner's PID; removed on release
    .NAME.tmp-PID-XXXXXXXX     the directory being built by process PID
    .NAME.old-PID-XXXXXXXX     the replaced artifact, only where RENAME_EXCHANGE is unavailable,
                               between the two renames of the fallback
    .NAME.probe-PID-XXXXXXXX   an empty directory, created and removed to test that NAME's folder is
                               writable

Replacing an existing NAME uses ``renameat2(RENAME_EXCHANGE)`` (Linux >= 3.15, through glibc's
``renameat2`` or the raw syscall), so NAME holds the complete old or the complete new directory at
every instant. Elsewhere (or on a filesystem that refuses the flag) the old NAME is renamed to
``.NAME.old-*`` and the new one renamed in; a process killed between the two renames leaves NAME
missing, and the next export to NAME moves the ``.old-`` directory back before anything else, so a
replaced artifact is never lost.

The next export to NAME, holding the lock, removes ``.tmp-``/``.old-``/``.probe-`` directories of NAME
whose process is gone (the PID in the name is not running, or is this process and the directory is
not one it is building) and reports each one. Directories of a running PID, or from an older
qmc-edge (no PID in the name), are only reported.

While the lock is held in the main thread, SIGTERM and SIGHUP raise SystemExit (SIGINT raises
KeyboardInterrupt, as usual), so the cleanup of a failed export runs for them too; inside
:func:`deferred_signals` (the renames and the cleanup) they wait until the section is done.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qmc_edge.errors import QMCError

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# renameat2 syscall numbers, for a libc without the wrapper (glibc < 2.28, some musl builds).
_RENAMEAT2_NR = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276, "i686": 353, "i386": 353,
                 "armv7l": 382, "ppc64le": 357, "s390x": 347, "riscv64": 276}  # fmt: skip
_DEBRIS = re.compile(r"(tmp|old|probe)-(?:(\d+)-)?([a-z0-9_]{8})")


def _abs(out: str | os.PathLike) -> Path:
    """``out`` as an absolute path without resolving its last component (it may be a symlink)."""
    p = Path(os.path.abspath(Path(out).expanduser()))
    return Path(os.path.realpath(p.parent)) / p.name


def lock_path(out: str | os.PathLike) -> Path:
    p = _abs(out)
    return p.parent / f".{p.name}.lock"


def sibling_prefix(out: str | os.PathLike, kind: str) -> str:
    """Name prefix of a hidden sibling of ``out`` made by this process (``tmp``, ``old``, ``probe``)."""
    return f".{_abs(out).name}.{kind}-{os.getpid()}-"


# --- signals ---------------------------------------------------------------------------------

_critical = 0
_pending: int | None = None


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def _handler(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    global _pending
    if _critical:
        _pending = signum
        return
    _raise_for(signum)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Run a short critical section (a rename pair, a cleanup) without being interrupted by the
    signals :func:`export_lock` handles; one that arrives meanwhile is raised at the end."""
    global _critical, _pending
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if _critical == 0 and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGHUP raise SystemExit (instead of killing the process without cleanup), and all
    three, SIGINT included, honour :func:`deferred_signals`; only where they have their defaults."""
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for sig, default in (
            (signal.SIGTERM, signal.SIG_DFL),
            (getattr(signal, "SIGHUP", None), signal.SIG_DFL),
            (signal.SIGINT, signal.default_int_handler),
        ):
            if sig is not None and signal.getsignal(sig) is default:
                saved[sig] = signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


# --- renames ---------------------------------------------------------------------------------

_renameat2_fn: Callable | None | bool = False  # False: not looked up yet


def _lookup_renameat2() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    nr = _RENAMEAT2_NR.get(platform.machine().lower())
    sc = getattr(libc, "syscall", None)
    if nr is None or sc is None:
        return None
    sc.restype = ctypes.c_long

    def via_syscall(a, src, b, dst, flags):
        return sc(ctypes.c_long(nr), ctypes.c_int(a), ctypes.c_char_p(src), ctypes.c_int(b), ctypes.c_char_p(dst),
                  ctypes.c_uint(flags))  # fmt: skip

    return via_syscall


def renameat2(src: str | os.PathLike, dst: str | os.PathLike, flags: int) -> bool:
    """``renameat2(src, dst, flags)``: True when done, False when this system cannot (no renameat2,
    or the filesystem does not support the flag); any other failure raises OSError."""
    global _renameat2_fn
    if _renameat2_fn is False:
        _renameat2_fn = _lookup_renameat2()
    fn = _renameat2_fn
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two existing paths; False where the system cannot."""
    return renameat2(a, b, RENAME_EXCHANGE)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, refusing (FileExistsError) when ``dst`` exists, even an empty
    directory (which a plain rename of a directory would silently replace)."""
    if renameat2(src, dst, RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """Remove a directory tree, a file or a symlink (not its target); missing is fine."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# --- temp dirs -------------------------------------------------------------------------------

_building: set[str] = set()  # temp dirs this process is filling now (never stale)


def new_temp_dir(out: str | os.PathLike) -> Path:
    """A hidden sibling ``.NAME.tmp-PID-XXXXXXXX`` of ``out`` to build in, with the permissions a plain
    mkdir would give (mkdtemp makes it private, which the renamed result would keep)."""
    p = _abs(out)
    tmp = Path(tempfile.mkdtemp(prefix=sibling_prefix(p, "tmp"), dir=p.parent))
    _building.add(str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def discard_temp_dir(tmp: Path) -> None:
    """Remove a temp dir of this process (signals wait until it is gone)."""
    with deferred_signals():
        remove_path(tmp)
        _building.discard(str(tmp))


def done_temp_dir(tmp: Path) -> None:
    """``tmp`` was renamed into place: no longer one of this process's temp dirs."""
    _building.discard(str(tmp))


def check_parent(out: Path) -> None:
    """The folder of ``out`` exists and this process can create a directory in it (checked by doing
    so: as root, or on a read-only mount, os.access alone can be wrong)."""
    parent = out.parent
    if not parent.exists():
        raise QMCError(f"cannot export to {out}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise QMCError(f"cannot export to {out}: {parent} is not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QMCError(f"cannot export to {out}: folder {parent} is not writable; choose another --out")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=sibling_prefix(out, "probe"), dir=parent))
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        msg = f"cannot export to {out}: cannot create a folder in {parent} ({why}); choose another --out"
        raise QMCError(msg) from None


# --- stale debris ----------------------------------------------------------------------------


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def _size_mb(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total / 1e6


@dataclass
class _Debris:
    path: Path
    kind: str  # tmp, old, probe
    pid: int | None  # None: no PID in the name (an older qmc-edge)

    @property
    def stale(self) -> bool:
        if self.pid is None or self.pid <= 0:
            return False
        if self.pid == os.getpid():
            return str(self.path) not in _building
        return not _pid_running(self.pid)


def find_debris(out: str | os.PathLike) -> list[_Debris]:
    """Hidden ``.NAME.tmp-*``, ``.NAME.old-*``, ``.NAME.probe-*`` directories next to ``out``."""
    p = _abs(out)
    prefix = f".{p.name}."
    found = []
    try:
        entries = list(os.scandir(p.parent))
    except OSError:
        return []
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        m = _DEBRIS.fullmatch(e.name[len(prefix) :])
        if m is None or not e.is_dir(follow_symlinks=False):
            continue
        found.append(_Debris(Path(e.path), m.group(1), int(m.group(2)) if m.group(2) else None))
    return sorted(found, key=lambda d: d.path.name)


def clean_stale(out: str | os.PathLike) -> list[str]:
    """Undo what killed exports to ``out`` left (call with the export lock held): move a stranded
    ``.old-`` directory back when ``out`` is missing, remove stale temp dirs; one note per action."""
    p = _abs(out)
    notes: list[str] = []
    debris = find_debris(p)
    stale = [d for d in debris if d.stale]
    olds = [d for d in stale if d.kind == "old"]
    with deferred_signals():
        if olds and not os.path.lexists(p):
            back = max(olds, key=lambda d: d.path.lstat().st_ctime)
            rename_noreplace(back.path, p)
            fsync_dir(p.parent)
            olds.remove(back)
            stale.remove(back)
            notes.append(
                f"restored {p} from {back.path.name}, left by an export (pid {back.pid}) killed while replacing it"
            )
        for d in stale:
            mb = _size_mb(d.path)
            remove_path(d.path)
            what = {"tmp": "unfinished export", "old": "replaced artifact", "probe": "write check"}[d.kind]
            done = "could not remove" if os.path.lexists(d.path) else "removed"
            notes.append(f"{done} {d.path} ({mb:.1f} MB), the {what} of an export (pid {d.pid}) no longer running")
    for d in debris:
        if d not in stale and d.path.exists():
            owner = f"its export (pid {d.pid}) is still running" if d.pid else "made by an older qmc-edge"
            notes.append(f"left {d.path}: {owner}; remove it by hand if no export to {p} is running")
    return notes


# --- the lock --------------------------------------------------------------------------------


@dataclass
class ExportLock:
    """The held lock of one destination; ``notes``: what the stale cleanup did."""

    out: Path
    path: Path
    fd: int
    notes: list[str] = field(default_factory=list)
    depth: int = 1
    thread: int = field(default_factory=threading.get_ident)

    def release(self) -> None:
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path)):
                os.unlink(self.path)  # while still locked: whoever locks it next checks the inode
        except OSError:
            pass
        finally:
            os.close(self.fd)


_held: dict[str, ExportLock] = {}
_held_guard = threading.Lock()


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _acquire(out: Path) -> ExportLock:
    import fcntl

    path = lock_path(out)
    for _ in range(50):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise QMCError(f"cannot export to {out}: cannot create the lock file {path} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            msg = f"another export to {out} is running (pid {pid}); wait for it or choose another --out"
            raise QMCError(msg) from None
        except OSError as exc:
            os.close(fd)
            raise QMCError(f"cannot export to {out}: cannot lock {path} ({exc.strerror})") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed it between our open and our lock: take the new one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return ExportLock(out=out, path=path, fd=fd)
        os.close(fd)
    raise QMCError(f"cannot export to {out}: the lock file {path} keeps changing; is an export loop running?")


@contextmanager
def export_lock(
    out: str | os.PathLike,
    force: bool = False,
    check: Callable[[Path, bool], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Iterator[ExportLock]:
    """Hold the exclusive lock of destination ``out`` for the block.

    Taken without waiting: while another process holds it, QMCError "another export to OUT is
    running (pid N)". Once taken, what killed exports to ``out`` left is cleaned (see
    :func:`clean_stale`; each note goes to ``on_note`` at once and onto the returned lock) and
    ``check(out, force)`` is run again, as the destination may have changed while unlocked.
    Re-entrant within one thread (the CLI takes it before loading the model, the export function
    again around its writes); another thread of this process is refused like another process."""
    given = Path(out).expanduser()
    key = str(lock_path(given))
    with _held_guard:
        lk = _held.get(key)
        if lk is not None:
            if lk.thread != threading.get_ident():
                msg = f"another export to {given} is running (pid {os.getpid()}, another thread)"
                raise QMCError(f"{msg}; wait for it or choose another --out")
            lk.depth += 1
    if lk is not None:
        try:
            if check is not None:
                check(given, force)
            yield lk
        finally:
            lk.depth -= 1
        return
    with _signals_raise():
        lk = _acquire(given)
        with _held_guard:
            _held[key] = lk
        try:
            lk.notes.extend(clean_stale(given))
            for note in lk.notes if on_note is not None else ():
                on_note(note)
            if check is not None:
                check(given, force)
            yield lk
        finally:
            with deferred_signals():
                with _held_guard:
                    _held.pop(key, None)
                lk.release()
