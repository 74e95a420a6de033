"""Export a standard Hugging Face checkpoint of the dequantized (optionally noise-realised) weights,
so tools that read HF models (lm-eval, vLLM, llama.cpp's convert_hf_to_gguf) can evaluate exactly the
weights QMC produces. The checkpoint holds plain dense weights: it shows accuracy, not the packed size.

Written to a hidden sibling temp directory and renamed into place, like the QMC artifact.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

import torch

from ..errors import QMCError
from .export import DENSE_DTYPES, fsync_path, make_temp_dir, replace_dir


def export_hf(model: torch.nn.Module, tokenizer, out: str | Path, dtype: str = "float32", force: bool = False) -> Path:
    """Save ``model`` as it is now (the caller realises the noise seed first) as an HF folder."""
    out = Path(out).expanduser()
    if dtype not in DENSE_DTYPES:
        raise QMCError(f"unknown dtype {dtype!r}; use one of: {', '.join(DENSE_DTYPES)}")
    if not out.parent.exists():
        raise QMCError(f"cannot export to {out}: folder {out.parent} does not exist; create it first")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or not (out / "config.json").is_file() or (out / "manifest.json").exists():
            raise QMCError(f"{out} exists and is not an HF checkpoint folder; choose another --out or remove it")
        if not force:
            raise QMCError(f"{out} already holds a checkpoint; pass --force to replace it")
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
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
