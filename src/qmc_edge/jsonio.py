"""Atomic JSON output: a temporary file in the same folder, renamed into place when complete."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from .errors import QMCError


def check_writable(path: str | Path) -> Path:
    """Fail before a long run, not after it, when the output folder does not exist."""
    p = Path(path).expanduser()
    if not p.parent.exists():
        raise QMCError(f"cannot write {path}: folder {p.parent} does not exist; create it first")
    if p.is_dir():
        raise QMCError(f"cannot write {path}: it is a directory; give a file name")
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
