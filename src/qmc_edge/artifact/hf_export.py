"""Export a standard Hugging Face checkpoint of the dequantized (optionally noise-realised) weights,
so tools that read HF models (lm-eval, vLLM, llama.cpp's convert_hf_to_gguf) can evaluate exactly the
weights QMC produces. The checkpoint holds plain dense weights: it shows accuracy, not the packed size.

Written to a hidden sibling temp directory and renamed (or, with ``force``, atomically swapped) into
place under the destination's export lock, with the stale cleanup of killed exports, exactly like
the QMC artifact (see :mod:`qmc_edge.artifact.fsutil`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from qmc_edge.artifact.export import DENSE_DTYPES, fsync_path, make_temp_dir, replace_dir
from qmc_edge.artifact.fsutil import check_parent, discard_temp_dir, export_lock
from qmc_edge.errors import QMCError


def check_hf_destination(out: str | Path, force: bool) -> None:
    """Refuse a missing or unwritable folder, anything at ``out`` that is not an HF checkpoint, and a
    checkpoint without ``force``. Cheap: call it before loading the model."""
    out = Path(out).expanduser()
    check_parent(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or not (out / "config.json").is_file() or (out / "manifest.json").exists():
            raise QMCError(f"{out} exists and is not an HF checkpoint folder; choose another --out or remove it")
        if not force:
            raise QMCError(f"{out} already holds a checkpoint; pass --force to replace it")


def check_hf_options(out: str | Path, dtype: str, force: bool) -> None:
    """Every check of :func:`export_hf` that needs no model: the dtype and the destination."""
    if dtype not in DENSE_DTYPES:
        raise QMCError(f"unknown dtype {dtype!r}; use one of: {', '.join(DENSE_DTYPES)}")
    check_hf_destination(out, force)


def export_hf(
    model: torch.nn.Module,
    tokenizer,
    out: str | Path,
    dtype: str = "float32",
    force: bool = False,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Save ``model`` as it is now (the caller realises the noise seed first) as an HF folder.
    ``on_note`` receives what the stale cleanup of the destination did (one line each)."""
    out = Path(out).expanduser()
    check_hf_options(out, dtype, force)
    with export_lock(out, force, check_hf_destination) as lock:
        if on_note is not None and lock.depth == 1:
            for note in lock.notes:
                on_note(note)
        _write_hf(model, tokenizer, out, dtype)
    return out


def _write_hf(model: torch.nn.Module, tokenizer, out: Path, dtype: str) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards"; the CLI has its own output
    tmp = make_temp_dir(out)
    try:
        target = DENSE_DTYPES[dtype]
        src_dtype = next(iter(model.parameters())).dtype
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A cast copy, so the caller's model keeps its exact weights.
            to_save = copy.deepcopy(model).to(target) if target != src_dtype else model
            to_save.save_pretrained(str(tmp))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
        for p in tmp.rglob("*"):
            if p.is_file():
                fsync_path(p)
        replace_dir(tmp, out)
    except BaseException:
        discard_temp_dir(tmp)
        raise
