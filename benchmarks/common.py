"""What every benchmark script records about where it ran."""

from __future__ import annotations

import torch

from qmc_edge.torch_device import machine_label  # noqa: F401 - re-exported for the scripts


def _portable_arg(arg: str) -> str:
    """A command-line argument as a recorded command shows it: a file outside the repository by its
    name only (its folder exists on one machine)."""
    from pathlib import Path

    p = Path(arg)
    root = Path(__file__).resolve().parents[1]
    if p.is_absolute() and p.exists() and not p.resolve().is_relative_to(root):
        return p.name
    return arg


def run_header(script: str, model: str, note: str, text: str, context: int, windows: int, t0: float) -> dict:
    """The fields every model benchmark's JSON starts with: the command, date, machine, model (and
    what its reference is), the text and how much of it, and the wall time since ``t0``."""
    import datetime as dt
    import sys
    import time

    return {
        "command": f"python benchmarks/{script} " + " ".join(_portable_arg(a) for a in sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine_label(),
        "model": model,
        "note": note,
        "text": text,
        "context": context,
        "windows": windows,
        "wall_seconds": time.perf_counter() - t0,
    }


def write_json(path, payload: dict) -> None:
    """Write ``payload`` to ``path`` complete or not at all (temporary name, then rename), with the
    code that produced it (git commit and dirty flag) unless the payload already names it."""
    import json

    from qmc_edge.jsonio import json_safe
    from qmc_edge.provenance import code_revision

    payload = {**payload, "code": payload.get("code") or code_revision()}

    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_for_ppl(model: str | None, threads: int):
    """(loaded model, text source, token ids, BOS id or None, model name) for a perplexity benchmark:
    ``model`` None is the embedded SmolLM2-135M, else a path (its file stem names the results)."""

    from qmc_edge.loaded import bos_for
    from qmc_edge.model.loading import load_model
    from qmc_edge.model.perplexity import load_text, tokenize

    torch.set_num_threads(threads)
    lm = load_model(model)
    src = load_text(None)
    ids = tokenize(lm.tokenizer, src.text)
    return lm, src, ids, bos_for(lm.tokenizer), results_name(model)


def results_name(model: str | None) -> str:
    """The name a model benchmark's results files carry: the model file's stem, or the embedded one's."""
    from pathlib import Path

    return "smollm2-135m" if model is None else Path(model).stem


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM); write "5" to /proc/self/clear_refs first to
    reset the high-water mark VmHWM, so a measurement sees only its own peak."""
    import re
    from pathlib import Path

    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
