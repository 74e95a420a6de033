"""Small file checks shared by the loaders and the CLI: a file's sha256, and whether it can be read."""

from __future__ import annotations

import hashlib
from pathlib import Path

from qmc_edge.errors import QMCError


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_readable(path: Path | str, what: str) -> None:
    """Read one byte: the only check that also catches /proc files, permissions and broken mounts."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise QMCError(f"{what}: cannot be read ({exc.strerror or exc}); check its permissions") from None
