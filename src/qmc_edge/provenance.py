"""Which code produced a result: the git commit of the checkout the package runs from, and whether
its tracked files had uncommitted changes ("dirty"). Every results file (``--json``, benchmarks) and
every row of a results store records it, so a stored number can be traced to the code that made it.

:data:`RESULTS_VERSION` names what the numbers mean: it changes whenever code changes a number a
result holds (a quantizer's codes, a noise draw, a perplexity), and the results store's point keys
cover it, so ``qmc sweep``/``make bench`` recompute exactly what the current version cannot vouch
for. ``tests/test_golden.py`` recomputes a handful of small results (noise-free, noisy, GPTQ, budget)
and fails when one moves while the version stays.

Outside a git checkout (an installed wheel) the commit is unknown and said so; nothing is guessed.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path

#: The version of the numbers (see the module docstring). Version 1: the code of 2026-12-05, which
#: computes the results stored in benchmarks/store and benchmarks/results except where their notes say
#: otherwise (rows measured before 2026-12-03 chose another clip ratio in 3 of SmolLM2's 898,560 groups;
#: GPTQ rows move in the last digits between CPUs). Bump it with any change of a number, and say why.
RESULTS_VERSION = 1

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
        return {
            "commit": None,
            "dirty": None,
            "source": "not a git checkout (an installed package)",
            "results_version": RESULTS_VERSION,
        }
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if head is None or status is None:
        return {"commit": None, "dirty": None, "source": "git could not be run", "results_version": RESULTS_VERSION}
    return {"commit": head.strip(), "dirty": bool(status.strip()), "source": "git", "results_version": RESULTS_VERSION}
