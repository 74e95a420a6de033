"""Atomic JSON output: a temporary file in the same folder, renamed into place when complete."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from qmc_edge.errors import QMCError


def probe_dir(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the one check that also holds for root and read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".qmc-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise QMCError(
            f"{what}: cannot write in folder {folder} ({exc.strerror or exc}); choose a writable place"
        ) from None


def check_writable(path: str | Path | None, flag: str = "--json") -> Path | None:
    """Fail before a long run, not after it: the output's folder exists and takes a new file, and the
    path is not a folder or a read-only file."""
    if path is None:
        return None
    p = Path(path).expanduser()
    what = f"{flag} {path}"
    if p.is_dir():
        raise QMCError(f"{what}: is a folder; give a file name")
    parent = p.parent
    if not parent.exists():
        raise QMCError(f"{what}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise QMCError(f"{what}: {parent} is not a folder; give a path inside a folder")
    if p.exists() and not p.is_file():
        raise QMCError(f"{what}: exists and is not a regular file; choose another path")
    if p.exists() and not os.access(p, os.W_OK):
        raise QMCError(f"{what}: the file is read-only; choose another path or make it writable")
    probe_dir(parent, what)
    return p


def json_safe(obj):
    """NaN/inf become null and tuples lists, so the output is strict JSON any tool can read."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, payload: dict) -> Path:
    p = check_writable(path)
    assert p is not None
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(json_safe(payload), f, indent=2, allow_nan=False)
            f.write("\n")
        # mkstemp creates 0600; results are meant to be shared, so use the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
