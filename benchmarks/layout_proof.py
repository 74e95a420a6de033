"""Proof that a change of layout moved no number: fingerprints of what 12 QMC and baseline
configurations produce on the embedded model, to compare before and after a refactor.

Per configuration: SHA-256 of every quantized tensor's codes, scales, zero points, outlier table,
code-to-level map and per-tensor configuration (bits, cells, memories), of the storage report, and of
one noisy read of every weight (chip 0); the noise-free and the noisy (chip 0) perplexity on the first
2 windows of 1024 tokens of WikiText-2 test. Then the tables `qmc deploy` and `qmc claims` print and
their JSON (less the environment block). Nothing here is timed.

    python benchmarks/layout_proof.py --out benchmarks/results/layout_proof/before.json
    python benchmarks/layout_proof.py --out benchmarks/results/layout_proof/after.json \
        --against benchmarks/results/layout_proof/before.json

(in their own folder: `qmc claims` reads the JSON files directly in ``benchmarks/results``, and counts
them in its table.)

With ``--against`` it exits 1 and names every field that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# (name, method). GPTQ and budget rows calibrate on 8 windows to keep the whole run to minutes.
CONFIGS: list[tuple[str, str]] = [
    ("rtn3", "rtn3"),
    ("emem3", "emem3"),
    ("qmc2", "qmc2"),
    ("qmc3", "qmc3"),
    ("qmc4", "qmc4"),
    ("qmc3 fisher outliers", "qmc3:outliers_by=fisher"),
    ("qmc3 level map", "qmc3:level_map=true"),
    ("budget 3.0 nearest", "qmc:budget=3.0"),
    ("budget 3.0 gptq", "qmc:budget=3.0,rounding=gptq,calib_samples=8"),
    ("qmc3-gptq", "qmc3-gptq:calib_samples=8"),
    ("qmc3 mram faults secded", "qmc3:mram_ber=0.001,mram_ecc=secded"),
    ("qmc3 aged + read noise", "qmc3:age=1d,read_noise=true"),
]
CONTEXT, WINDOWS = 1024, 2


def _sha(*tensors: object) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
        elif isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def _tensor_digest(qt) -> dict:
    inl, ot = qt.inliers, qt.outliers
    return {
        "codes": _sha(inl.codes),
        "scales": _sha(inl.scale),
        "zeros": _sha(inl.zero),
        "outliers": _sha(None)
        if ot is None
        else _sha(ot.index, ot.codes, ot.scale, ot.bits, getattr(ot, "offset", None)),
        "level_map": _sha(qt.level_map),
        "config": _sha(
            qt.shape,
            inl.bits,
            inl.group_size,
            qt.code_memory,
            qt.cell_bits,
            qt.meta_memory,
            qt.cell_layout,
            qt.mram_ecc,
        ),
    }


def _combine(d: dict[str, dict]) -> dict[str, str]:
    fields = next(iter(d.values())).keys()
    return {f: hashlib.sha256("".join(d[n][f] for n in d).encode()).hexdigest() for f in fields}


def measure_configs(only: list[str] | None) -> dict:
    from qmc_edge.loaded import bos_for
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model, storage_report
    from qmc_edge.model.loading import load_model
    from qmc_edge.model.perplexity import load_text, tokenize
    from qmc_edge.model.perplexity import perplexity as ppl

    torch.manual_seed(0)
    lm = load_model(None)
    ids = tokenize(lm.tokenizer, load_text(None, allow_hub=False).text)
    bos = bos_for(lm.tokenizer)
    out: dict = {"fp_ppl": ppl(lm.model, ids, CONTEXT, WINDOWS, bos).ppl, "configs": {}}
    for name, text in CONFIGS:
        if only and name not in only:
            continue
        spec = parse_method(text)
        print(f"{name}: {spec.name}", file=sys.stderr, flush=True)
        qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
        per = {n: _tensor_digest(qt) for n, qt in qm.tensors.items()}
        info = {k: v for k, v in qm.info.items() if k not in ("search_seconds", "calibration")}
        budget = info.get("budget", {})
        budget = {k: v for k, v in budget.items() if k != "search_seconds"}
        rep = storage_report(lm.model, spec, qm)
        row = {
            "spec": spec.name,
            "tensors": _combine(per),
            "configs": _sha(json.dumps(budget, sort_keys=True)),
            "storage": _sha(json.dumps(rep, sort_keys=True)),
        }
        try:
            qm.realise(lm.model, None)
            row["ppl_clean"] = ppl(lm.model, ids, CONTEXT, WINDOWS, bos).ppl
            if spec.noisy:
                qm.realise(lm.model, 0)
                params = dict(lm.model.named_parameters(remove_duplicate=False))
                row["noisy_read"] = _sha(*(params[n] for n in qm.tensors))
                reread = (lambda i, qm=qm: qm.realise(lm.model, 0, read=i) if i else None) if qm.rereads else None
                row["ppl_noisy_chip0"] = ppl(lm.model, ids, CONTEXT, WINDOWS, bos, None, reread).ppl
        finally:
            qm.restore(lm.model)
        print(f"  {json.dumps({k: v for k, v in row.items() if k.startswith('ppl')})}", file=sys.stderr, flush=True)
        out["configs"][name] = row
    return out


# The `qmc` command wherever its app lives (qmc_edge.cli before the layout change, qmc_edge.cli.app after).
_RUN_CLI = (
    "import importlib, sys; m = importlib.import_module('qmc_edge.cli'); "
    "app = getattr(m, 'app', None) or importlib.import_module('qmc_edge.cli.app').app; sys.argv[0] = 'qmc'; app()"
)
_VOLATILE = re.compile(r"(\d+(\.\d+)? ?s\b|wrote .*|\d+:\d\d:\d\d)")


def _cli(args: list[str], tmp: Path) -> dict:
    """A `qmc` command's printed table and JSON (the environment block dropped)."""
    js = tmp / "out.json"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    r = subprocess.run(
        [sys.executable, "-c", _RUN_CLI, *args, "--json", str(js)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data = json.loads(js.read_text())
    data.pop("env", None)
    text = "\n".join(_VOLATILE.sub("", line) for line in r.stdout.splitlines())
    return {"table": _sha(text), "json": _sha(json.dumps(data, sort_keys=True)), "table_text": text}


def measure_tables() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {
            "deploy": _cli(["deploy", "-m", "fp", "-m", "rtn4", "-m", "qmc3", "-m", "qmc2"], tmp),
            "claims": _cli(["claims"], tmp),
        }


def _diff(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k == "table_text":
                continue
            out += _diff(a.get(k), b.get(k), f"{path}/{k}")
        return out
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--against", type=Path, help="an earlier output: exit 1 if anything differs")
    ap.add_argument("--only", nargs="*", help="configuration names to run (default all)")
    ap.add_argument("--no-tables", action="store_true", help="skip qmc deploy / qmc claims")
    ap.add_argument("--no-configs", action="store_true", help="only qmc deploy / qmc claims (a quick check)")
    a = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True).stdout)
    res = {"commit": commit, "dirty": dirty, **({} if a.no_configs else measure_configs(a.only))}
    if not a.no_tables:
        res["tables"] = measure_tables()
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(a.out)
    if a.against:
        ref = json.loads(a.against.read_text())
        ref.pop("commit", None), ref.pop("dirty", None)
        cur = {k: v for k, v in res.items() if k not in ("commit", "dirty")}
        if a.only:
            ref["configs"] = {k: v for k, v in ref["configs"].items() if k in a.only}
        if a.no_tables:
            ref.pop("tables", None)
        if a.no_configs:
            ref.pop("configs", None), ref.pop("fp_ppl", None)
        bad = _diff(ref, cur)
        print("identical" if not bad else "\n".join(["DIFFERENT:", *bad]))
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
