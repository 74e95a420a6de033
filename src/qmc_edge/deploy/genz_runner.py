"""Run GenZ (pip ``genz-llm``) decode predictions for a list of points; a standalone script.

Why standalone: GenZ pins its own dependency set (pandas, plotly, kaleido...) and writes CSVs to /tmp,
so it lives in a separate virtual environment, never in the project's. This file imports only the
standard library and GenZ, and is run as ``VENV/bin/python genz_runner.py IN.json OUT.json`` by
:func:`qmc_edge.deploy.validate.genz_predict`.

Input: a list of {id, model: {vocab_size, hidden_size, intermediate_size, num_ffi, num_decoder_layers,
num_attention_heads, num_key_value_heads, head_dim}, system: {Flops (TFLOPS), Memory_size (GB),
Memory_BW (GB/s)}, bits, input_tokens, output_tokens, system_eff}. Output: the same ids with
latency_ms and tokens_per_s (or error).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

# Run as a file, Python puts this folder first on sys.path, where platform.py would shadow the
# standard library's ``platform`` module that GenZ's dependencies import: drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def main(inp: str, outp: str) -> None:
    warnings.filterwarnings("ignore")
    from GenZ import decode_moddeling
    from GenZ.Models.default_models import ModelConfig

    points = json.load(open(inp, encoding="utf-8"))
    results = []
    for pt in points:
        t0 = time.perf_counter()
        try:
            cfg = ModelConfig(model=pt["id"], **pt["model"])
            system = {**pt["system"], "ICN": 1, "real_values": True}
            r = decode_moddeling(
                model=cfg,
                batch_size=1,
                input_tokens=pt["input_tokens"],
                output_tokens=pt["output_tokens"],
                Bb=1,
                system_name=system,
                bits=pt["bits"],
                system_eff=pt.get("system_eff", 1.0),
            )
            results.append(
                {
                    "id": pt["id"],
                    "latency_ms": float(r["Latency"]),
                    "tokens_per_s": float(r["Throughput"]),
                    "seconds": time.perf_counter() - t0,
                }
            )
        except Exception as exc:  # noqa: BLE001 - report per point, keep going
            results.append({"id": pt["id"], "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
    from importlib.metadata import version

    payload = {"genz_version": version("genz-llm"), "python": sys.version.split()[0], "results": results}
    with open(outp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)


if __name__ == "__main__":  # pragma: no cover - run in the GenZ venv
    main(sys.argv[1], sys.argv[2])
