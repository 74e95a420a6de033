"""Which code produced a result: the git commit of the checkout the package runs from, and whether
its tracked files had uncommitted changes ("dirty"). Every results file (``--json``, benchmarks) and
every row of a results store records it, so a stored number can be traced to the code that made it.

Outside a git checkout (an installed wheel) the commit is unknown and said so; nothing is guessed.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

#: The repository root when the package runs from a checkout (src/qmc_edge/provenance.py).
_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


@lru_cache(maxsize=1)
def code_revision() -> dict:
    """``{"commit": sha or None, "dirty": bool or None, "source": how it was found}``; computed once
    per process (a sweep's rows all come from the code it started with)."""
    if not (_ROOT / ".git").exists():
        return {"commit": None, "dirty": None, "source": "not a git checkout (an installed package)"}
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if head is None or status is None:
        return {"commit": None, "dirty": None, "source": "git could not be run in the checkout"}
    return {"commit": head.strip(), "dirty": bool(status.strip()), "source": "git"}
