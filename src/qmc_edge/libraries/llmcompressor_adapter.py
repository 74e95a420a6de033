"""GPTQ and AWQ by llm-compressor (vLLM project), read back as the project's own quantized tensors.

What runs: ``llmcompressor.oneshot`` on a deep copy of the model (the library edits the model it is
given), with the library's defaults except where stated:

- weights: asymmetric integer codes with a scale and an integer zero point per row and group of
  ``group_size`` input columns, min-max ranges (the library's default observer), the same format as
  this project's RTN. The groups are expressed as llm-compressor's ``block`` strategy with blocks
  of 1 x group_size, because its ``group`` strategy refuses layers whose width is not a multiple of
  the group size (SmolLM2: 576 columns, group 128); blocks allow a partial last group per row,
  exactly like RTN here.
- GPTQ: ``GPTQModifier`` defaults (dampening 0.01, block 128, static activation ordering, which
  keeps groups contiguous).
- AWQ: ``AWQModifier`` (default Llama mappings, 20-point grid) followed by ``QuantizationModifier``,
  as the library's examples do, with ``duo_scaling=False``: the activation-only scale search of
  the AWQ paper and the original llm-awq code. The library's default (duo scaling, which also
  divides by per-group weight means) fails on partial groups in llm-compressor 0.14
  (``_compute_layer_means`` reshapes the columns into whole groups).
- CPU: llm-compressor 0.14's AWQ pins cached activations in page-locked memory for faster
  host-to-GPU copies, which raises on a CPU-only torch; pinning is made a no-op while it runs
  when no accelerator is present (it changes no number, only where a buffer lives).

The integer codes are recovered with the library's own ``quantize`` and checked against its own
``fake_quantize`` output for every tensor; unquantized parameters that the method changed (AWQ
folds its scales into the RMSNorm weights) are carried as overrides of the quantized model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch

from qmc_edge.errors import QMCError
from qmc_edge.libraries import require
from qmc_edge.quant.calibration import CalibrationSet, calibration_set
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes

# Results are deterministic in (model weights, method options, calibration); a benchmark asks for
# the same GPTQ/AWQ run twice (ideal memory and ReRAM rows), so the last few are kept.
_CACHE: OrderedDict[tuple, tuple[dict[str, QuantizedTensor], dict[str, torch.Tensor], float, dict]] = OrderedDict()
_CACHE_SIZE = 4


def clear_cache() -> None:
    _CACHE.clear()


def _fingerprint(model: torch.nn.Module) -> str:
    """Cheap content hash of every parameter (sums and shapes), so a changed model is re-quantized."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            d = p.detach().double()
            h.update(f"{name}{tuple(p.shape)}{float(d.sum())!r}{float((d * d).sum())!r}".encode())
    return h.hexdigest()


def weight_args(bits: int, group_size: int) -> dict:
    """compressed-tensors weight arguments: asymmetric ints, 1 x group_size blocks (0: per channel)."""
    base = {"num_bits": bits, "type": "int", "symmetric": False}
    if group_size <= 0:
        return {**base, "strategy": "channel"}
    return {**base, "strategy": "block", "block_structure": [1, group_size]}


def _recipe(method: str, bits: int, group_size: int) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier  # type: ignore

    groups = {"group_0": {"targets": ["Linear"], "weights": weight_args(bits, group_size)}}
    if method == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=["lm_head"])]
    from llmcompressor.modifiers.transform.awq import AWQModifier  # type: ignore

    return [AWQModifier(duo_scaling=False), QuantizationModifier(config_groups=groups, ignore=["lm_head"])]


@contextlib.contextmanager
def _cpu_quiet_session() -> Iterator[None]:
    """No page-locked buffers without an accelerator; the library's logs and bars kept off the CLI."""
    from llmcompressor.pipelines.cache import IntermediatesCache  # type: ignore
    from loguru import logger  # type: ignore

    saved_pin = IntermediatesCache.pin_memory
    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, *a, **k: None  # type: ignore[method-assign]
    quiet = not os.environ.get("QMC_LIBRARY_LOGS")  # set it to see the library's own logs and bars
    try:
        with contextlib.ExitStack() as stack:
            if quiet:
                for lib in ("llmcompressor", "compressed_tensors"):
                    logger.disable(lib)
                    stack.callback(logger.enable, lib)
                # its per-layer tqdm bars write to stderr; errors still propagate as exceptions
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            yield
    finally:
        IntermediatesCache.pin_memory = saved_pin  # type: ignore[method-assign]


def run_oneshot(model: torch.nn.Module, tokenizer, method: str, bits: int, group_size: int, calib: CalibrationSet):
    """llm-compressor's GPTQ or AWQ on ``model`` in place (pass a copy); returns the model."""
    from datasets import Dataset  # type: ignore[import-not-found]
    from llmcompressor import oneshot  # type: ignore

    ds = Dataset.from_dict(
        {"input_ids": [list(s) for s in calib.samples], "attention_mask": [[1] * len(s) for s in calib.samples]}
    )
    with tempfile.TemporaryDirectory() as cfg_dir, _cpu_quiet_session():
        # oneshot re-reads the config from config.name_or_path (a GGUF folder has none): point it at a copy.
        # A GGUF model is dequantized to fp32 on load, but its config still says quant_method "gguf",
        # which oneshot refuses; the weights it sees are plain floats, so the copy drops that record.
        qc = getattr(model.config, "quantization_config", None)
        qm = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
        if str(getattr(qm, "value", qm)) == "gguf":
            del model.config.quantization_config
        model.config.save_pretrained(cfg_dir)
        model.config.name_or_path = cfg_dir
        oneshot(
            model=model,
            processor=tokenizer,
            dataset=ds,
            recipe=_recipe(method, bits, group_size),
            num_calibration_samples=calib.n_samples,
            max_seq_length=calib.seq_len,
            shuffle_calibration_samples=False,  # the windows are already a seeded random draw
        )
    return model


def extract(module: torch.nn.Module, bits: int) -> tuple[QuantizedTensor, torch.Tensor]:
    """(our QuantizedTensor, the library's own dequantized weight) of one quantized Linear."""
    from compressed_tensors.quantization import fake_quantize, quantize  # type: ignore
    from compressed_tensors.quantization.utils import calculate_range  # type: ignore

    args = module.quantization_scheme.weights
    w = module.weight.detach()
    scale = module.weight_scale.detach().float()
    zp = module.weight_zero_point.detach().float()
    q_min, q_max = calculate_range(args, w.device)
    if int(q_max - q_min) != 2**bits - 1:
        raise QMCError(f"llm-compressor used a {int(q_max - q_min) + 1}-level range, expected {2**bits}")
    q = quantize(w, scale, zp, args, dtype=torch.float32)  # integers in [q_min, q_max]
    reference = fake_quantize(w, scale, zp, args).float()
    out, inf = w.shape
    scale2 = scale.reshape(out, -1)
    zero2 = (zp - q_min.float()).reshape(out, -1)
    g = inf if scale2.shape[1] == 1 else int(args.block_structure[1])
    inl = UniformCodes(codes=(q - q_min).round().to(torch.uint8), scale=scale2, zero=zero2, bits=bits, group_size=g)
    return QuantizedTensor(shape=(out, inf), inliers=inl), reference


def from_library_model(
    model: torch.nn.Module, work: torch.nn.Module, names: list[str], bits: int
) -> tuple[dict[str, QuantizedTensor], dict[str, torch.Tensor], float]:
    """(tensors, overrides, worst extraction error) read from ``work``, the library's result on a
    copy of ``model``. ``overrides``: unquantized parameters that differ from ``model``'s."""
    mods = dict(work.named_modules())
    tensors: dict[str, QuantizedTensor] = {}
    worst = 0.0
    for name in names:
        mod = mods.get(name.removesuffix(".weight"))
        if mod is None or not hasattr(mod, "weight_scale"):
            raise QMCError(f"llm-compressor left {name} unquantized; only decoder Linear layers are supported")
        qt, ref = extract(mod, bits)
        err = float((qt.dequantize() - ref).abs().max())
        if err > 1e-5 * float(ref.abs().max()) + 1e-7:
            raise QMCError(f"extracted codes of {name} differ from llm-compressor's own output by {err:.3g}")
        worst = max(worst, err)
        tensors[name] = qt
    orig = dict(model.named_parameters(remove_duplicate=False))
    overrides = {
        n: p.detach().clone()
        for n, p in work.named_parameters(remove_duplicate=False)
        if n not in tensors and n in orig and not torch.equal(p.detach(), orig[n].detach())
    }
    return tensors, overrides, worst


def quantize_llmc(
    model: torch.nn.Module,
    names: list[str],
    method: str,
    bits: int,
    group_size: int,
    tokenizer,
    calib_samples: int,
    calib_len: int,
    progress: Callable[[int, int], None] | None = None,
    calib: CalibrationSet | None = None,
) -> tuple[dict[str, QuantizedTensor], dict[str, torch.Tensor], float, dict]:
    """(tensors, overrides, seconds, info) of GPTQ/AWQ for the weights ``names``; ``model`` is unchanged.

    ``overrides`` are the unquantized parameters the method changed (AWQ's smoothed norms);
    ``calib`` replaces the default calibration windows (tests use text their tiny tokenizer knows).
    """
    require(method)
    if tokenizer is None:
        raise QMCError(f"{method.upper()} calibrates on text and needs the model's tokenizer (tokenizer=...)")
    key = (_fingerprint(model), method, bits, group_size, calib_samples, calib_len, calib)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    if progress:
        progress(0, len(names))
    t0 = time.perf_counter()
    if calib is None:
        calib = calibration_set(tokenizer, calib_samples, calib_len)
    work = run_oneshot(copy.deepcopy(model), tokenizer, method, bits, group_size, calib)
    seconds = time.perf_counter() - t0
    tensors, overrides, worst = from_library_model(model, work, names, bits)
    del work
    if progress:
        progress(len(names), len(names))
    info = {
        "library": _versions(),
        "calibration": calib.describe(),
        "extraction_max_abs_error": worst,
        "overridden_parameters": sorted(overrides),
    }
    result = (tensors, overrides, seconds, info)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _versions() -> dict:
    from importlib.metadata import version

    return {p: version(p) for p in ("llmcompressor", "compressed-tensors", "transformers", "torch")}
