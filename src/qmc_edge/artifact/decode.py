"""Read and check an artifact directory without building a model: the manifest (its own checksum,
format, method), every listed file (size, sha256, no unlisted or linked files), each tensor's
safetensors arrays against the manifest's layout and the method's, and the quantized tensors decoded
from their packed bits (cell levels back to codes, packed codes, scales, zero points, outlier tables,
code-to-level maps). Every problem is one :class:`BadArtifact` line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from pydantic import ValidationError

from qmc_edge.artifact.export import decode_scale
from qmc_edge.artifact.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    TensorEntry,
    body_checksum,
    manifest_text,
)
from qmc_edge.artifact.pack import packed_nbytes, unpack_bits
from qmc_edge.errors import QMCError
from qmc_edge.fileio import sha256_file
from qmc_edge.memory.cells import cells_per_code, cells_to_codes, codes_to_cells
from qmc_edge.methods import MethodSpec, spec_from_dict
from qmc_edge.quant.level_map import inverse, is_permutation
from qmc_edge.quant.qtensor import OutlierTable, QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes

SCALE_DTYPES = {"e8m0": torch.int8, "float16": torch.float16, "float32": torch.float32}

DENSE_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


class BadArtifact(Exception):
    """A problem found in one file; turned into a QMCError naming it."""


@dataclass
class ArtifactContents:
    """A verified artifact, not yet a torch model."""

    root: Path
    manifest: Manifest
    spec: MethodSpec
    tensors: dict[str, QuantizedTensor]
    dense: dict[str, torch.Tensor]


@contextmanager
def member(root: Path, name: str):
    """Turn any failure while handling ``name`` into one QMCError line naming the file."""
    where = root / name
    try:
        yield
    except QMCError:
        raise
    except BadArtifact as exc:
        raise QMCError(f"{where}: {exc}; the artifact is damaged or was edited, re-export it") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any library; never a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise QMCError(
            f"{where}: unreadable ({type(exc).__name__}: {first}); the artifact is damaged, re-export it"
        ) from None


#: A manifest lists a few hundred tensors (kB to a few MB for the largest models).
MAX_MANIFEST_BYTES = 64 * 2**20


def read_manifest(root: Path) -> Manifest:
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise QMCError(f"{root}: not a directory; give the folder written by `qmc export`")
    if not mpath.is_file():
        raise QMCError(f"{mpath}: missing; {root} is not a complete qmc artifact (interrupted export?)")
    with member(root, MANIFEST_NAME):
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:  # checked before reading: a huge file is the wrong file
            raise BadArtifact(f"larger than {MAX_MANIFEST_BYTES // 2**20} MiB; not a manifest written by qmc export")
        try:
            text = mpath.read_bytes().decode("utf-8")  # bytes: text mode would hide \r edits
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadArtifact(f"not valid JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise BadArtifact(f"not a {FORMAT_NAME} manifest")
        ver = raw.get("format_version")
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            raise BadArtifact(f"format_version {ver!r} is not a positive integer")
        if ver < FORMAT_VERSION:
            raise QMCError(
                f"{mpath}: artifact format version {ver} was written by an older qmc-edge whose method "
                f"options this one no longer reads (it reads version {FORMAT_VERSION}); re-export the artifact"
            )
        if ver > FORMAT_VERSION:
            raise QMCError(
                f"{mpath}: artifact format version {ver} is newer than this qmc-edge reads "
                f"(up to {FORMAT_VERSION}); upgrade qmc-edge"
            )
        if raw.get("checksum") != body_checksum(raw):
            raise BadArtifact("manifest checksum mismatch")
        if text != manifest_text(raw):
            raise BadArtifact("manifest is not byte for byte as written (whitespace or layout edited)")
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise BadArtifact(f"invalid field {loc}: {err['msg']}") from None


def check_files(root: Path, manifest: Manifest) -> None:
    """Every listed file is present, inside the directory, of the recorded size and sha256; and the
    directory holds nothing else (an added tokenizer file such as added_tokens.json or
    special_tokens_map.json would silently change tokenization, so no unlisted file is trusted)."""
    for name, entry in manifest.files.items():
        pp = PurePosixPath(name)
        if pp.is_absolute() or ".." in pp.parts or name == MANIFEST_NAME:
            raise QMCError(f"{root / MANIFEST_NAME}: lists an unsafe file name {name!r}; re-export the artifact")
        path = root / name
        with member(root, name):
            if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
                # a link (even to an identical copy elsewhere) is not the artifact's own file: what it
                # points to can change after verify without the folder changing
                raise BadArtifact("is a link, not a file of the artifact; copy the file into the folder")
            if not path.is_file():
                raise QMCError(f"{path}: missing file listed in the manifest; the artifact is incomplete, re-export it")
            size = path.stat().st_size
            if size != entry.size:
                raise BadArtifact(f"size {size} bytes, manifest says {entry.size} (truncated or changed)")
            if sha256_file(path) != entry.sha256:
                raise BadArtifact("sha256 mismatch")
    check_unlisted(root, manifest)


def check_unlisted(root: Path, manifest: Manifest) -> None:
    """Refuse any file or directory under ``root`` that the manifest does not list (manifest.json
    itself and the folders of listed files aside)."""
    listed = set(manifest.files) | {MANIFEST_NAME}
    folders = {p.as_posix() for n in manifest.files for p in PurePosixPath(n).parents if p.as_posix() != "."}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        entries = [(n, listed) for n in filenames] + [(n, folders) for n in dirnames]
        for name, allowed in sorted(entries):
            rel = (here / name).as_posix()
            if rel in allowed:
                continue
            raise QMCError(f"{root / rel}: not listed in the manifest; remove it or re-export the artifact")


def _load_safetensors(root: Path, name: str, expected: dict[str, tuple[torch.dtype, tuple[int, ...]]]):
    """Load a tensor file and check it holds exactly the expected keys, dtypes and shapes."""
    if not expected:
        return {}
    from safetensors.torch import load_file

    with member(root, name):
        if not (root / name).is_file():
            raise QMCError(f"{root / name}: missing file; the artifact is incomplete, re-export it")
        data = load_file(str(root / name))
        missing = [k for k in expected if k not in data]
        if missing:
            raise BadArtifact(f"tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        extra = [k for k in data if k not in expected]
        if extra:
            raise BadArtifact(f"unexpected tensor {extra[0]!r}")
        for k, (dtype, shape) in expected.items():
            t = data[k]
            if t.dtype != dtype:
                raise BadArtifact(f"tensor {k!r} is {t.dtype}, expected {dtype}")
            if tuple(t.shape) != tuple(shape):
                raise BadArtifact(f"tensor {k!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        return data


def _expected(entries: list[TensorEntry]) -> dict[str, dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    """What each tensor file must contain, derived from the manifest alone."""
    exp: dict[str, dict] = {"reram.safetensors": {}, "codes.safetensors": {}, "meta.safetensors": {}}
    exp["mram.safetensors"] = {}
    for e in entries:
        out_f, in_f = e.shape
        n = out_f * in_f
        if e.code_memory == "reram":
            k = cells_per_code(e.bits, e.cell_bits)
            exp["reram.safetensors"][e.name] = (torch.uint8, (packed_nbytes(n * k, e.cell_bits),))
        else:
            exp["codes.safetensors"][e.name] = (torch.uint8, (packed_nbytes(n, e.bits),))
        n_meta = out_f * e.n_groups
        exp["meta.safetensors"][f"{e.name}.scale"] = (SCALE_DTYPES[e.scale_encoding], (out_f, e.n_groups))
        if e.zero_encoding == "packed":
            zb = e.bits if e.zero_bits is None else e.zero_bits
            exp["meta.safetensors"][f"{e.name}.zero"] = (torch.uint8, (packed_nbytes(n_meta, zb),))
        elif e.zero_encoding != "const":
            exp["meta.safetensors"][f"{e.name}.zero"] = (SCALE_DTYPES[e.zero_encoding], (out_f, e.n_groups))
        if e.outliers is not None:
            o = e.outliers
            m = exp["mram.safetensors"]
            m[f"{e.name}.outlier_codes"] = (torch.uint8, (packed_nbytes(o.count, o.bits),))
            m[f"{e.name}.outlier_counts"] = (torch.uint8, (packed_nbytes(out_f, o.count_bits),))
            m[f"{e.name}.outlier_cols"] = (torch.uint8, (packed_nbytes(o.count, o.col_bits),))
            m[f"{e.name}.outlier_scale"] = (torch.float64, (1,))
            if o.code == "offset":
                m[f"{e.name}.outlier_offset"] = (torch.float64, (1,))
        if e.level_map:
            exp["mram.safetensors"][f"{e.name}.level_map"] = (torch.uint8, (packed_nbytes(2**e.bits, e.bits),))
    return exp


def _check_entry(e: TensorEntry) -> None:
    out_f, in_f = e.shape
    if out_f < 1 or in_f < 1:
        raise BadArtifact(f"tensor {e.name}: bad shape {e.shape}")
    g = min(e.group_size, in_f)
    if e.n_groups != -(-in_f // g):
        raise BadArtifact(
            f"tensor {e.name}: {e.n_groups} groups do not fit shape {e.shape} and group size {e.group_size}"
        )
    if e.code_memory == "reram" and not 1 <= e.cell_bits <= 3:
        raise BadArtifact(f"tensor {e.name}: ReRAM codes need 1..3 bits per cell, got {e.cell_bits}")
    if (e.zero_encoding == "const") != (e.zero_const is not None) or (e.zero_bits == 0) != (e.zero_encoding == "const"):
        raise BadArtifact(f"tensor {e.name}: zero_bits, zero_encoding and zero_const disagree")
    if e.zero_encoding == "packed" and not 1 <= (e.bits if e.zero_bits is None else e.zero_bits) <= 16:
        raise BadArtifact(f"tensor {e.name}: packed zero points need 1..16 bits")
    if e.outliers is not None and not 0 <= e.outliers.count <= out_f * in_f:
        raise BadArtifact(f"tensor {e.name}: {e.outliers.count} outliers do not fit shape {e.shape}")


def _check_against_spec(spec: MethodSpec, e: TensorEntry) -> None:
    """The manifest's method options and its tensor entries must tell the same story: a resealed edit
    of one (cell bits 3 -> 2, method qmc -> rtn) would otherwise change how the cells are read."""
    o = e.outliers
    have = {
        "code_memory": e.code_memory,
        "meta_memory": e.meta_memory,
        "cell_bits": e.cell_bits,
        "bits": e.bits,
        "group_size": e.group_size,
        "scale_bits": e.scale_bits,
        "outlier_bits": o.bits if o is not None and o.count else None,
        "outliers": o.count if o is not None else 0,
        "outlier_code": o.code if o is not None and o.count else None,
        "mram_ecc": e.mram_ecc,
        "cell_layout": e.cell_layout,
    }
    for key, want in spec.expected_layout(e.shape).items():
        if key in have and have[key] != want:
            raise BadArtifact(
                f"tensor {e.name}: {key}={have[key]} in its entry, but method {spec.name!r} implies {key}={want}"
            )


def _decode(root: Path, e: TensorEntry, files: dict[str, dict[str, torch.Tensor]]) -> QuantizedTensor:
    """Rebuild one QuantizedTensor; inconsistent data raises QMCError naming the file that holds it."""
    out_f, in_f = e.shape
    n = out_f * in_f
    code_file = "reram.safetensors" if e.code_memory == "reram" else "codes.safetensors"
    lmap = _level_map(root, e, files)
    with member(root, code_file):
        if e.code_memory == "reram":
            k = cells_per_code(e.bits, e.cell_bits)
            levels = unpack_bits(files[code_file][e.name].numpy(), e.cell_bits, n * k)
            cells = torch.from_numpy(levels.astype(np.uint8)).reshape(out_f, in_f, k)
            codes = cells_to_codes(cells, e.bits, e.cell_bits, e.cell_layout)
            if not torch.equal(codes_to_cells(codes, e.bits, e.cell_bits, e.cell_layout), cells):
                raise BadArtifact(f"tensor {e.name}: cell levels that no {e.bits}-bit code maps to")
            if lmap is not None:
                codes = inverse(lmap)[codes.long()]
            codes = codes.to(torch.uint8)
        else:
            codes = unpack_bits(files[code_file][e.name].numpy(), e.bits, n)
            codes = torch.from_numpy(codes.astype(np.uint8)).reshape(out_f, in_f)
    meta = files["meta.safetensors"]
    with member(root, "meta.safetensors"):
        scale = decode_scale(e.scale_encoding, meta[f"{e.name}.scale"])
        if not bool(torch.isfinite(scale).all()):
            raise BadArtifact(f"tensor {e.name}: non-finite scales")
        if e.zero_encoding == "const":
            zero = torch.full((out_f, e.n_groups), float(e.zero_const), dtype=torch.float32)
        elif e.zero_encoding in ("float16", "float32"):
            zero = meta[f"{e.name}.zero"].to(torch.float32)
            if not bool(torch.isfinite(zero).all()):
                raise BadArtifact(f"tensor {e.name}: non-finite zero points")
        else:
            zb = e.bits if e.zero_bits is None else e.zero_bits
            z = unpack_bits(meta[f"{e.name}.zero"].numpy(), zb, out_f * e.n_groups)
            zero = torch.from_numpy(z.astype(np.float32)).reshape(out_f, e.n_groups)
    inl = UniformCodes(codes=codes, scale=scale, zero=zero, bits=e.bits, group_size=min(e.group_size, in_f))
    outliers = None
    if e.outliers is not None:
        o = e.outliers
        m = files["mram.safetensors"]
        with member(root, "mram.safetensors"):
            counts = unpack_bits(m[f"{e.name}.outlier_counts"].numpy(), o.count_bits, out_f)
            cols = unpack_bits(m[f"{e.name}.outlier_cols"].numpy(), o.col_bits, o.count)
            if int(counts.sum()) != o.count or (counts > in_f).any() or (cols >= in_f).any():
                raise BadArtifact(f"tensor {e.name}: outlier CSR counts/columns inconsistent with {o.count} outliers")
            index = np.repeat(np.arange(out_f, dtype=np.int64), counts) * in_f + cols
            if index.size and (np.diff(index) <= 0).any():
                raise BadArtifact(f"tensor {e.name}: outlier columns not strictly increasing within a row")
            ocodes = unpack_bits(m[f"{e.name}.outlier_codes"].numpy(), o.bits, o.count) - (1 << (o.bits - 1))
            if o.code == "symmetric" and ocodes.size and ocodes.min() < -((1 << (o.bits - 1)) - 1):
                raise BadArtifact(f"tensor {e.name}: outlier code out of the symmetric range")
            oscale = float(m[f"{e.name}.outlier_scale"][0])
            if not np.isfinite(oscale):
                raise BadArtifact(f"tensor {e.name}: non-finite outlier scale")
            ooffset = None
            if o.code == "offset":
                ooffset = float(m[f"{e.name}.outlier_offset"][0])
                if not np.isfinite(ooffset) or ooffset < 0:
                    raise BadArtifact(f"tensor {e.name}: outlier offset must be finite and >= 0")
        outliers = OutlierTable(
            index=torch.from_numpy(index),
            codes=torch.from_numpy(ocodes.astype(np.int16)),
            scale=oscale,
            bits=o.bits,
            offset=ooffset,
        )
    return QuantizedTensor(
        shape=(out_f, in_f),
        inliers=inl,
        code_memory=e.code_memory,
        cell_bits=e.cell_bits,
        meta_memory=e.meta_memory,
        scale_bits=e.scale_bits,
        zero_bits=e.zero_bits,
        outliers=outliers,
        mram_ecc=e.mram_ecc,
        cell_layout=e.cell_layout,
        level_map=lmap,
    )


def _level_map(root: Path, e: TensorEntry, files: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor | None:
    """The tensor's code-to-level permutation, checked to be one (None when it has none)."""
    if not e.level_map:
        return None
    if e.code_memory != "reram":
        raise BadArtifact(f"tensor {e.name}: level_map is set but its codes are not in ReRAM")
    with member(root, "mram.safetensors"):
        t = torch.from_numpy(unpack_bits(files["mram.safetensors"][f"{e.name}.level_map"].numpy(), e.bits, 2**e.bits))
        if not is_permutation(t, 2**e.bits):
            raise BadArtifact(f"tensor {e.name}: level_map is not a permutation of the {2**e.bits} codes")
    return t.to(torch.uint8)


def read_artifact(path: str | os.PathLike) -> ArtifactContents:
    """Verify every file of the artifact at ``path`` and decode its tensors (no torch model yet)."""
    root = Path(path).expanduser()
    manifest = read_manifest(root)
    with member(root, MANIFEST_NAME):
        try:
            spec = spec_from_dict(manifest.method)
        except ValueError as exc:
            raise BadArtifact(f"invalid method options ({exc})") from None
        names = [e.name for e in manifest.tensors] + [d.name for d in manifest.dense]
        if len(set(names)) != len(names):
            raise BadArtifact("a tensor is listed twice")
        if manifest.method_name != spec.name:
            raise BadArtifact(f"method_name {manifest.method_name!r} does not match the method options ({spec.name!r})")
        for e in manifest.tensors:
            _check_entry(e)
            _check_against_spec(spec, e)
        if "config.json" not in manifest.files:
            raise BadArtifact("config.json is not listed")
        if (spec.method == "fp") != (not manifest.tensors):
            raise BadArtifact(f"method {spec.method} does not match {len(manifest.tensors)} quantized tensors")
    check_files(root, manifest)
    expected = _expected(manifest.tensors)
    expected["dense.safetensors"] = {
        d.name: (DENSE_DTYPES.get(d.dtype, getattr(torch, d.dtype, None)), tuple(d.shape)) for d in manifest.dense
    }
    files = {}
    for fname, exp in expected.items():
        if exp and fname not in manifest.files:
            raise QMCError(f"{root / MANIFEST_NAME}: {fname} holds tensors but is not listed; re-export the artifact")
        files[fname] = _load_safetensors(root, fname, exp)
    tensors: dict[str, QuantizedTensor] = {}
    for e in manifest.tensors:
        tensors[e.name] = _decode(root, e, files)
    return ArtifactContents(root, manifest, spec, tensors, files["dense.safetensors"])
