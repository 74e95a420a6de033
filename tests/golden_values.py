"""The golden results: a handful of small numbers recomputed by tests/test_golden.py, each of a
different kind (noise-free, a noisy chip, GPTQ rounding, a bit budget), on the tiny model and the
synthetic text. Stored in tests/golden.json with the results version that produced them.

    python tests/golden_values.py --write   # after bumping qmc_edge.provenance.RESULTS_VERSION

Writing refuses to change a number under the version it was stored with: a change of a number is a
change of version (the store's keys follow it, so `qmc sweep` recomputes what it can no longer vouch for).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"
# (name, method, seed of the noisy chip or None). Small on purpose: the whole set runs in seconds.
CONFIGS = [
    ("rtn4 clean", "rtn4", None),
    ("qmc3 clean", "qmc3:group_size=32", None),
    ("qmc3 chip 0", "qmc3:group_size=32", 0),
    ("qmc3 aged chip 1", "qmc3:group_size=32,age=1d,read_noise=true", 1),
    ("qmc3-gptq clean", "qmc3-gptq:group_size=32", None),
    ("budget 4 clean", "qmc:budget=4,group_size=32", None),
]
# Perplexity agrees across CPUs to float rounding; GPTQ's error compensation amplifies it (its rows
# move in the last digits between machines), so its codes are not compared and its perplexity less tightly.
RTOL = {"qmc3-gptq clean": 1e-3}
DEFAULT_RTOL = 1e-6


def _codes_sha(qm) -> str:
    h = hashlib.sha256()
    for name in sorted(qm.tensors):
        qt = qm.tensors[name]
        h.update(name.encode())
        for t in (qt.inliers.codes, qt.inliers.scale, qt.inliers.zero):
            h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def compute(lm, text: str, only: list[str] | None = None) -> dict[str, dict]:
    """{name: {"ppl": ..., "codes": sha or None}} of every golden configuration on ``lm``."""
    sys.path.insert(0, str(HERE))
    from test_gptq import _calib

    from qmc_edge.loaded import bos_for
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model, target_weights
    from qmc_edge.model.perplexity import perplexity, tokenize
    from qmc_edge.quant.stages.pipeline import run_stages

    ids = tokenize(lm.tokenizer, text)
    bos = bos_for(lm.tokenizer)
    out = {}
    for name, method, seed in CONFIGS:
        if only and name not in only:
            continue
        spec = parse_method(method)
        if spec.calibrated:
            names = target_weights(lm.model, spec.quantizes_embeddings)
            qm = run_stages(spec, lm.model, names, lm.tokenizer, None, _calib(lm.tokenizer))
        else:
            qm = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
        try:
            qm.realise(lm.model, seed)
            reread = (lambda i, qm=qm, s=seed: qm.realise(lm.model, s, read=i) if i else None) if qm.rereads else None
            ppl = perplexity(lm.model, ids, 32, 4, bos, None, reread).ppl
        finally:
            qm.restore(lm.model)
        out[name] = {"ppl": ppl, "codes": None if name in RTOL else _codes_sha(qm)}
    return out


def differences(got: dict[str, dict], want: dict[str, dict]) -> list[str]:
    """What moved: codes that differ, perplexities beyond their tolerance."""
    bad = []
    for name, w in want.items():
        g = got.get(name)
        if g is None:
            continue
        if w["codes"] != g["codes"]:
            bad.append(f"{name}: codes/scales/zero points changed")
        tol = RTOL.get(name, DEFAULT_RTOL)
        if abs(g["ppl"] - w["ppl"]) > tol * abs(w["ppl"]):
            bad.append(f"{name}: perplexity {w['ppl']!r} -> {g['ppl']!r}")
    return bad


def main() -> None:  # pragma: no cover - the regeneration command
    sys.path.insert(0, str(HERE))
    import tempfile

    from conftest import build_tiny_llama, build_tokenizer, synthetic_text

    from qmc_edge.model.loading import load_model
    from qmc_edge.provenance import RESULTS_VERSION, code_revision

    text = synthetic_text()
    with tempfile.TemporaryDirectory() as d:  # as the tests' tiny_lm fixture builds and loads it
        tok = build_tokenizer(text)
        build_tiny_llama(len(tok)).save_pretrained(d)
        tok.save_pretrained(d)
        got = compute(load_model(d), text)
    if GOLDEN.is_file():
        old = json.loads(GOLDEN.read_text(encoding="utf-8"))
        if old["results_version"] == RESULTS_VERSION and differences(got, old["values"]):
            sys.exit(
                "numbers moved under the same results version:\n"
                + "\n".join(differences(got, old["values"]))
                + "\nbump qmc_edge.provenance.RESULTS_VERSION (and say why) before writing them"
            )
    payload = {"results_version": RESULTS_VERSION, "code": code_revision(), "values": got}
    tmp = GOLDEN.with_suffix(".json.tmp")  # complete or not at all
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(GOLDEN)
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/golden_values.py --write")
    main()
