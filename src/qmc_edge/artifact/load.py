"""Load and verify a QMC artifact directory as a model (reading and decoding the files is
:mod:`qmc_edge.artifact.decode`).

Every check happens before anything is trusted: the manifest's format version and self-checksum,
then each file's size and sha256 and that the folder holds no file the manifest does not list (an
added tokenizer file would change tokenization unchecked), then every tensor's presence, dtype and
shape against what the manifest implies, then the decoded values (code ranges, CSR consistency);
the tokenizer is read from copies of the listed files only. Any failure raises
:class:`QMCError` with one line naming the file and the problem; no other exception escapes, and
no partly-checked model is ever returned.

The QuantizedTensors are rebuilt with the same dtypes and values as the in-memory quantization, so
their dequantization, and a noise realisation through :meth:`QuantizedModel.realise` for a given
seed, are bit for bit those of the pipeline that made the artifact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch

from qmc_edge.artifact.decode import DENSE_DTYPES, ArtifactContents, BadArtifact, member, read_artifact
from qmc_edge.artifact.manifest import (
    MANIFEST_NAME,
    Manifest,
)
from qmc_edge.errors import QMCError
from qmc_edge.fileio import sha256_file
from qmc_edge.loaded import LoadedModel
from qmc_edge.quant.qmodel import QuantizedModel


@dataclass
class ArtifactModel(LoadedModel):
    """A :class:`LoadedModel` loaded from an artifact. ``quantized`` is the rebuilt QuantizedModel
    (None for an ``fp`` artifact): ``quantized.realise(model, seed)`` draws one memory-noise read for
    a seed, ``quantized.restore(model)`` returns to the noise-free dequantized weights."""

    quantized: QuantizedModel | None = None
    manifest: Manifest | None = None
    path: Path | None = None
    noise_seed: int | None = None
    contents: ArtifactContents | None = field(default=None, repr=False)

    def realise(self, seed: int | None, read: int = 0) -> None:
        """Read ``read`` of chip ``seed`` (None: the noise-free read) written into ``self.model``."""
        if self.quantized is None:
            return
        self.quantized.restore(self.model)
        if seed is not None:
            self.quantized.realise(self.model, seed, read)
        self.noise_seed = seed


def is_artifact(path: str | os.PathLike) -> bool:
    p = Path(path).expanduser()
    return p.is_dir() and (p / MANIFEST_NAME).is_file()


def _no_init():
    """Skip random weight init (every weight is overwritten); the context's home moved in transformers 5."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def build_model(c: ArtifactContents) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The torch model with the dense tensors and the noise-free dequantized weights; also returns
    those dequantized weights (the QuantizedModel's ``reference``, so restore() undoes a realisation)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    root, m = c.root, c.manifest
    dtype = DENSE_DTYPES.get(m.model_dtype)
    if dtype is None:
        raise QMCError(f"{root / MANIFEST_NAME}: unsupported model_dtype {m.model_dtype!r}; re-export the artifact")
    hf_logging.set_verbosity_error()
    with member(root, "config.json"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = AutoConfig.from_pretrained(str(root))
        with _no_init():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.tie_weights()  # no_init_weights also skips tying; the config says what is tied
    model.eval()
    params = dict(model.named_parameters(remove_duplicate=False))
    targets = {**dict(model.named_buffers(remove_duplicate=False)), **params}
    assigned: set[int] = set()
    clean: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for d in m.dense:
            for name in [d.name, *d.aliases]:
                with member(root, "dense.safetensors"):
                    t = targets.get(name)
                    if t is None or tuple(t.shape) != tuple(d.shape):
                        raise BadArtifact(f"tensor {name!r} {tuple(d.shape)} does not fit the model in config.json")
                    t.copy_(c.dense[d.name].to(t.dtype))
                    assigned.add(id(t))
        for name, qt in c.tensors.items():
            with member(root, "reram.safetensors" if qt.code_memory == "reram" else "codes.safetensors"):
                p = params.get(name)
                if p is None or tuple(p.shape) != tuple(qt.shape):
                    raise BadArtifact(f"tensor {name!r} {qt.shape} does not fit the model in config.json")
                w = qt.dequantize()
                p.copy_(w.to(p.dtype))
                clean[name] = p.detach().clone()
                assigned.add(id(p))
    persistent = set(model.state_dict().keys())
    for name, t in targets.items():
        if id(t) not in assigned and (name in params or name in persistent):
            raise QMCError(f"{root / 'dense.safetensors'}: no tensor for model parameter {name!r}; re-export it")
    return model, clean


def _load_tokenizer(c: ArtifactContents):
    """The tokenizer, read from copies of the listed files only (checked again after copying), so
    that a file added or changed after verification cannot change how text is tokenized."""
    from transformers import AutoTokenizer

    names = [n for n in c.manifest.files if not n.endswith(".safetensors")]
    if not any(PurePosixPath(n).name.startswith("tokenizer") for n in names):
        return None
    with tempfile.TemporaryDirectory(prefix="qmc-tokenizer-") as d:
        for n in names:
            dst = Path(d) / n
            with member(c.root, n):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(c.root / n, dst)
                if sha256_file(dst) != c.manifest.files[n].sha256:
                    raise BadArtifact("changed while loading (sha256 mismatch)")
        with member(c.root, "tokenizer.json"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(d)
    tok.name_or_path = str(c.root)
    return tok


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= 1e-9 * max(abs(a), 1.0)
    return a == b


def _check_model_against_spec(c: ArtifactContents, model: torch.nn.Module, qm: QuantizedModel | None) -> None:
    """The quantized tensors are exactly the ones the method quantizes in this model, and the storage
    report recomputed from the decoded tensors is the one the manifest carries."""
    from qmc_edge.jsonio import json_safe
    from qmc_edge.methods.whole_model import storage_report, target_weights

    where = c.root / MANIFEST_NAME
    if qm is not None:
        want = set(target_weights(model, c.spec.quantizes_embeddings))
        extra, missing = sorted(set(qm.tensors) - want), sorted(want - set(qm.tensors))
        if extra or missing:
            what = f"{extra[0]!r} is quantized but the method does not" if extra else f"{missing[0]!r} is not quantized"
            raise QMCError(f"{where}: {what} quantize it for {c.spec.name}; the artifact was edited, re-export it")
    report = json_safe(storage_report(model, c.spec, qm))
    if not _same(report, c.manifest.storage_report):
        raise QMCError(
            f"{where}: storage_report does not match the stored tensors; the artifact was edited, re-export it"
        )


def load_artifact(path: str | os.PathLike, noise_seed: int | None = None) -> ArtifactModel:
    """Verify and load an artifact as a working torch model (dequantized; with ``noise_seed``, one
    memory-noise realisation drawn exactly as ``QuantizedModel.realise(model, noise_seed)`` would)."""
    c = read_artifact(path)
    model, clean = build_model(c)
    qm = None
    if c.tensors:
        qm = QuantizedModel(c.spec, c.tensors, c.manifest.quantize_seconds, clean)
    _check_model_against_spec(c, model, qm)
    tok = _load_tokenizer(c)
    m = c.manifest
    note = f"QMC artifact: {m.method_name} of {m.model_source}"
    if not m.dense_exact:
        note += f"; unquantized tensors stored as {m.dense_dtype} (rounded from {m.model_dtype})"
    if m.model_note:
        note += f"; {m.model_note}"
    lm = ArtifactModel(
        model=model,
        tokenizer=tok,
        source=str(c.root),
        note=note,
        quantized=qm,
        manifest=m,
        path=c.root,
        contents=c,
    )
    if noise_seed is not None:
        lm.realise(noise_seed)
    return lm


def summary(c: ArtifactContents) -> dict:
    """What `qmc verify` prints: provenance, method, sizes on disk against the storage report."""
    m = c.manifest
    total = sum(f.size for f in m.files.values()) + (c.root / MANIFEST_NAME).stat().st_size
    report_mb = (m.storage_report or {}).get("model_MB")
    return {
        "path": str(c.root),
        "format": f"{m.format} v{m.format_version}",
        "created": m.created,
        "model_source": m.model_source,
        "model_revision": m.model_revision,
        "method": m.method_name,
        "spec": m.method,
        "quantized_tensors": len(m.tensors),
        "dense_tensors": len(m.dense),
        "dense_dtype": m.dense_dtype,
        "dense_exact": m.dense_exact,
        "packed_MB": m.packed_bytes / 1e6,
        "storage_report_model_MB": report_mb,
        "packed_vs_report": (m.packed_bytes / 1e6 / report_mb) if report_mb else None,
        "total_MB": total / 1e6,
        "files": {k: v.size for k, v in m.files.items()},
        "libraries": m.libraries,
    }


def verify_artifact(path: str | os.PathLike) -> dict:
    """Check every file and tensor of an artifact (no torch model is built); its summary."""
    return summary(read_artifact(path))
