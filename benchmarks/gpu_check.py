"""On a GPU machine: are the counter-based device-noise draws bit-identical on CPU and GPU?

Compares, bit for bit, what the CPU and the GPU compute from the same seeds with
:class:`qmc_edge.memory.counter_rng.CounterStream` (``realise(rng="philox")``):

1. the uniforms of several streams (10M each);
2. one read of random 2- and 3-bit cells through each shipped ReRAM cell model's transition matrix
   (fresh and one day old), the cells on the GPU and on the CPU;
3. reads with per-read noise (programmed conductance + read noise, thresholded): these go through the
   inverse normal CDF, which the GPU may round differently in the last bit, so the script counts the
   cells that differ instead of requiring none;
4. MRAM bit flips at BER 1e-4;
5. the inlier quantizer where the weights are (``quantize_uniform`` on CUDA tensors) against the CPU:
   min-max RTN codes, QMC's noise-aware clip grid and the descent (on the CPU compiled, on the GPU
   its torch formulation): both take every group's expected error as the same IEEE operations summed
   in the same fixed order (``uniform._lane_sum``), so the codes and scales must be identical.

Writes benchmarks/results/gpu_check.json (machine named). Exits 2 with one line when no CUDA device
is present. Usage: python benchmarks/gpu_check.py [--cells 4000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from common import machine_label, write_json  # noqa: E402

from qmc_edge.memory.cells import code_error_moments  # noqa: E402
from qmc_edge.memory.counter_rng import CounterStream  # noqa: E402
from qmc_edge.memory.files import shipped_cell_models  # noqa: E402
from qmc_edge.memory.models import reram  # noqa: E402
from qmc_edge.memory.mram import MRAMBitFlips  # noqa: E402
from qmc_edge.quant import uniform  # noqa: E402
from qmc_edge.quant.uniform import clip_grid, quantize_uniform  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4_000_000)
    ap.add_argument(
        "--against",
        default="cuda",
        help="cpu: run every comparison CPU against CPU (tries the script; the quantizer's GPU side "
        "runs its torch formulation there)",
    )
    args = ap.parse_args()
    if args.against == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine (CPU: tests/test_counter_rng.py)")
    gpu = torch.device(args.against)
    t0 = time.perf_counter()
    checks = []

    def record(name: str, cpu: torch.Tensor, dev: torch.Tensor, exact: bool = True) -> None:
        differ = int((cpu != dev.cpu()).sum())
        checks.append({"check": name, "elements": cpu.numel(), "differ": differ, "must_be_exact": exact})
        print(f"{name}: {differ} of {cpu.numel()} differ", flush=True)

    for seed, name in [(0, "a"), (1, "model.layers.0.mlp.down_proj.weight"), (12345, "x\0read 3")]:
        record(
            f"uniforms seed={seed}",
            CounterStream(seed, name).uniform(10_000_000),
            CounterStream(seed, name, gpu).uniform(10_000_000),
        )
    for device in shipped_cell_models():
        for cells in (2, 3):
            for age in (0.0, "1d"):
                d = reram(cells, cell_model=device, age_s=age)
                lv = torch.randint(0, 2**cells, (args.cells,), generator=torch.Generator().manual_seed(cells))
                record(
                    f"read {device} {cells}b/cell age={age}",
                    d.read(lv, CounterStream(0, "cells")),
                    d.read(lv.to(gpu), CounterStream(0, "cells", gpu)),
                )
        d = reram(3, cell_model=device, read_noise=True)
        lv = torch.randint(0, 8, (args.cells,), generator=torch.Generator().manual_seed(7))
        record(
            f"read {device} 3b/cell with read noise",
            d.read(lv, CounterStream(0, "chip"), CounterStream(0, "read 0")),
            d.read(lv.to(gpu), CounterStream(0, "chip", gpu), CounterStream(0, "read 0", gpu)),
            exact=False,
        )
    codes = torch.randint(-127, 128, (args.cells,), dtype=torch.int16, generator=torch.Generator().manual_seed(3))
    record(
        "MRAM flips ber=1e-4",
        MRAMBitFlips(1e-4).flip(codes, 8, CounterStream(0, "mram")),
        MRAMBitFlips(1e-4).flip(codes.to(gpu), 8, CounterStream(0, "mram", gpu)),
    )
    g = torch.Generator().manual_seed(11)
    w = torch.randn(1536, 576, generator=g) * 0.02
    w.view(-1)[torch.randperm(w.numel(), generator=g)[: w.numel() // 200]] *= 20
    mask = torch.rand(w.shape, generator=g) > 0.01
    for bits, cells in ((3, 3), (2, 2), (4, 2)):
        a, b = quantize_uniform(w, bits, 128), quantize_uniform(w.to(gpu), bits, 128)
        record(f"RTN codes {bits}b", a.codes, b.codes)
        mom = code_error_moments(bits, reram(cells))
        for search in ("grid", "descent"):
            kw = dict(inlier_mask=mask, clip_ratios=clip_grid(20), moments=mom, search=search)
            a = quantize_uniform(w, bits, 128, **kw)
            kw["inlier_mask"] = mask.to(gpu)
            uniform.COMPILED = False  # what a GPU runs; on --against cpu, the torch formulation on the CPU
            try:
                b = quantize_uniform(w.to(gpu), bits, 128, **kw)
            finally:
                uniform.COMPILED = True
            record(f"QMC inlier codes {bits}b@{cells}b/cell clip {search}", a.codes, b.codes)
            record(f"QMC inlier scales {bits}b@{cells}b/cell clip {search}", a.scale, b.scale)
    payload = {
        "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:]),
        "machine": machine_label(args.against),
        "torch": torch.__version__,
        "wall_seconds": time.perf_counter() - t0,
        "all_exact": all(c["differ"] == 0 for c in checks if c["must_be_exact"]),
        "checks": checks,
    }
    if args.against == "cuda":
        write_json(HERE / "results" / "gpu_check.json", payload)
    print("all exact checks identical" if payload["all_exact"] else "SOME EXACT CHECKS DIFFER", flush=True)


if __name__ == "__main__":
    main()
