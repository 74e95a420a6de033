"""Read, verify and load a QMC artifact directory.

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

import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from qmc_edge.loaded import LoadedModel
from qmc_edge.memory.cells import cells_per_code, cells_to_codes, codes_to_cells
from qmc_edge.methods import MethodSpec, spec_from_dict
from qmc_edge.quant.level_map import inverse, is_permutation
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import OutlierTable, QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes

_SCALE_DTYPES = {"e8m0": torch.int8, "float16": torch.float16, "float32": torch.float32}
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


class _Bad(Exception):
    """A problem found in one file; turned into a QMCError naming it."""


@dataclass
class ArtifactContents:
    """A verified artifact, not yet a torch model."""

    root: Path
    manifest: Manifest
    spec: MethodSpec
    tensors: dict[str, QuantizedTensor]
    dense: dict[str, torch.Tensor]


@dataclass
class ArtifactModel(LoadedModel):
    """A :class:`LoadedModel` loaded from an artifact. ``quantized`` is the rebuilt QuantizedModel
    (None for an ``fp`` artifact): ``quantized.realise(model, seed)`` draws one device-noise read for
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


@contextmanager
def _file(root: Path, name: str):
    """Turn any failure while handling ``name`` into one QMCError line naming the file."""
    where = root / name
    try:
        yield
    except QMCError:
        raise
    except _Bad as exc:
        raise QMCError(f"{where}: {exc}; the artifact is damaged or was edited, re-export it") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in any library; never a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise QMCError(
            f"{where}: unreadable ({type(exc).__name__}: {first}); the artifact is damaged, re-export it"
        ) from None


def read_manifest(root: Path) -> Manifest:
    mpath = root / MANIFEST_NAME
    if not root.is_dir():
        raise QMCError(f"{root}: not a directory; give the folder written by `qmc export`")
    if not mpath.is_file():
        raise QMCError(f"{mpath}: missing; {root} is not a complete qmc artifact (interrupted export?)")
    with _file(root, MANIFEST_NAME):
        try:
            text = mpath.read_bytes().decode("utf-8")  # bytes: text mode would hide \r edits
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Bad(f"not valid JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
            raise _Bad(f"not a {FORMAT_NAME} manifest")
        ver = raw.get("format_version")
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            raise _Bad(f"format_version {ver!r} is not a positive integer")
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
            raise _Bad("manifest checksum mismatch")
        if text != manifest_text(raw):
            raise _Bad("manifest is not byte for byte as written (whitespace or layout edited)")
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise _Bad(f"invalid field {loc}: {err['msg']}") from None


def check_files(root: Path, manifest: Manifest) -> None:
    """Every listed file is present, inside the directory, of the recorded size and sha256; and the
    directory holds nothing else (an added tokenizer file such as added_tokens.json or
    special_tokens_map.json would silently change tokenization, so no unlisted file is trusted)."""
    for name, entry in manifest.files.items():
        pp = PurePosixPath(name)
        if pp.is_absolute() or ".." in pp.parts or name == MANIFEST_NAME:
            raise QMCError(f"{root / MANIFEST_NAME}: lists an unsafe file name {name!r}; re-export the artifact")
        path = root / name
        with _file(root, name):
            if not path.is_file():
                raise QMCError(f"{path}: missing file listed in the manifest; the artifact is incomplete, re-export it")
            size = path.stat().st_size
            if size != entry.size:
                raise _Bad(f"size {size} bytes, manifest says {entry.size} (truncated or changed)")
            if sha256_file(path) != entry.sha256:
                raise _Bad("sha256 mismatch")
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

    with _file(root, name):
        if not (root / name).is_file():
            raise QMCError(f"{root / name}: missing file; the artifact is incomplete, re-export it")
        data = load_file(str(root / name))
        missing = [k for k in expected if k not in data]
        if missing:
            raise _Bad(f"tensor {missing[0]!r} is missing ({len(missing)} missing in all)")
        extra = [k for k in data if k not in expected]
        if extra:
            raise _Bad(f"unexpected tensor {extra[0]!r}")
        for k, (dtype, shape) in expected.items():
            t = data[k]
            if t.dtype != dtype:
                raise _Bad(f"tensor {k!r} is {t.dtype}, expected {dtype}")
            if tuple(t.shape) != tuple(shape):
                raise _Bad(f"tensor {k!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
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
        exp["meta.safetensors"][f"{e.name}.scale"] = (_SCALE_DTYPES[e.scale_encoding], (out_f, e.n_groups))
        if e.zero_encoding == "packed":
            zb = e.bits if e.zero_bits is None else e.zero_bits
            exp["meta.safetensors"][f"{e.name}.zero"] = (torch.uint8, (packed_nbytes(n_meta, zb),))
        elif e.zero_encoding != "const":
            exp["meta.safetensors"][f"{e.name}.zero"] = (_SCALE_DTYPES[e.zero_encoding], (out_f, e.n_groups))
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
        raise _Bad(f"tensor {e.name}: bad shape {e.shape}")
    g = min(e.group_size, in_f)
    if e.n_groups != -(-in_f // g):
        raise _Bad(f"tensor {e.name}: {e.n_groups} groups do not fit shape {e.shape} and group size {e.group_size}")
    if e.code_memory == "reram" and not 1 <= e.cell_bits <= 3:
        raise _Bad(f"tensor {e.name}: ReRAM codes need 1..3 bits per cell, got {e.cell_bits}")
    if (e.zero_encoding == "const") != (e.zero_const is not None) or (e.zero_bits == 0) != (e.zero_encoding == "const"):
        raise _Bad(f"tensor {e.name}: zero_bits, zero_encoding and zero_const disagree")
    if e.zero_encoding == "packed" and not 1 <= (e.bits if e.zero_bits is None else e.zero_bits) <= 16:
        raise _Bad(f"tensor {e.name}: packed zero points need 1..16 bits")
    if e.outliers is not None and not 0 <= e.outliers.count <= out_f * in_f:
        raise _Bad(f"tensor {e.name}: {e.outliers.count} outliers do not fit shape {e.shape}")


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
            raise _Bad(
                f"tensor {e.name}: {key}={have[key]} in its entry, but method {spec.name!r} implies {key}={want}"
            )


def _decode(root: Path, e: TensorEntry, files: dict[str, dict[str, torch.Tensor]]) -> QuantizedTensor:
    """Rebuild one QuantizedTensor; inconsistent data raises QMCError naming the file that holds it."""
    out_f, in_f = e.shape
    n = out_f * in_f
    code_file = "reram.safetensors" if e.code_memory == "reram" else "codes.safetensors"
    lmap = _level_map(root, e, files)
    with _file(root, code_file):
        if e.code_memory == "reram":
            k = cells_per_code(e.bits, e.cell_bits)
            levels = unpack_bits(files[code_file][e.name].numpy(), e.cell_bits, n * k)
            cells = torch.from_numpy(levels.astype(np.uint8)).reshape(out_f, in_f, k)
            codes = cells_to_codes(cells, e.bits, e.cell_bits, e.cell_layout)
            if not torch.equal(codes_to_cells(codes, e.bits, e.cell_bits, e.cell_layout), cells):
                raise _Bad(f"tensor {e.name}: cell levels that no {e.bits}-bit code maps to")
            if lmap is not None:
                codes = inverse(lmap)[codes.long()]
            codes = codes.to(torch.uint8)
        else:
            codes = unpack_bits(files[code_file][e.name].numpy(), e.bits, n)
            codes = torch.from_numpy(codes.astype(np.uint8)).reshape(out_f, in_f)
    meta = files["meta.safetensors"]
    with _file(root, "meta.safetensors"):
        scale = decode_scale(e.scale_encoding, meta[f"{e.name}.scale"])
        if not bool(torch.isfinite(scale).all()):
            raise _Bad(f"tensor {e.name}: non-finite scales")
        if e.zero_encoding == "const":
            zero = torch.full((out_f, e.n_groups), float(e.zero_const), dtype=torch.float32)
        elif e.zero_encoding in ("float16", "float32"):
            zero = meta[f"{e.name}.zero"].to(torch.float32)
            if not bool(torch.isfinite(zero).all()):
                raise _Bad(f"tensor {e.name}: non-finite zero points")
        else:
            zb = e.bits if e.zero_bits is None else e.zero_bits
            z = unpack_bits(meta[f"{e.name}.zero"].numpy(), zb, out_f * e.n_groups)
            zero = torch.from_numpy(z.astype(np.float32)).reshape(out_f, e.n_groups)
    inl = UniformCodes(codes=codes, scale=scale, zero=zero, bits=e.bits, group_size=min(e.group_size, in_f))
    outliers = None
    if e.outliers is not None:
        o = e.outliers
        m = files["mram.safetensors"]
        with _file(root, "mram.safetensors"):
            counts = unpack_bits(m[f"{e.name}.outlier_counts"].numpy(), o.count_bits, out_f)
            cols = unpack_bits(m[f"{e.name}.outlier_cols"].numpy(), o.col_bits, o.count)
            if int(counts.sum()) != o.count or (counts > in_f).any() or (cols >= in_f).any():
                raise _Bad(f"tensor {e.name}: outlier CSR counts/columns inconsistent with {o.count} outliers")
            index = np.repeat(np.arange(out_f, dtype=np.int64), counts) * in_f + cols
            if index.size and (np.diff(index) <= 0).any():
                raise _Bad(f"tensor {e.name}: outlier columns not strictly increasing within a row")
            ocodes = unpack_bits(m[f"{e.name}.outlier_codes"].numpy(), o.bits, o.count) - (1 << (o.bits - 1))
            if o.code == "symmetric" and ocodes.size and ocodes.min() < -((1 << (o.bits - 1)) - 1):
                raise _Bad(f"tensor {e.name}: outlier code out of the symmetric range")
            oscale = float(m[f"{e.name}.outlier_scale"][0])
            if not np.isfinite(oscale):
                raise _Bad(f"tensor {e.name}: non-finite outlier scale")
            ooffset = None
            if o.code == "offset":
                ooffset = float(m[f"{e.name}.outlier_offset"][0])
                if not np.isfinite(ooffset) or ooffset < 0:
                    raise _Bad(f"tensor {e.name}: outlier offset must be finite and >= 0")
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
        raise _Bad(f"tensor {e.name}: level_map is set but its codes are not in ReRAM")
    with _file(root, "mram.safetensors"):
        t = torch.from_numpy(unpack_bits(files["mram.safetensors"][f"{e.name}.level_map"].numpy(), e.bits, 2**e.bits))
        if not is_permutation(t, 2**e.bits):
            raise _Bad(f"tensor {e.name}: level_map is not a permutation of the {2**e.bits} codes")
    return t.to(torch.uint8)


def read_artifact(path: str | os.PathLike) -> ArtifactContents:
    """Verify every file of the artifact at ``path`` and decode its tensors (no torch model yet)."""
    root = Path(path).expanduser()
    manifest = read_manifest(root)
    with _file(root, MANIFEST_NAME):
        try:
            spec = spec_from_dict(manifest.method)
        except ValueError as exc:
            raise _Bad(f"invalid method options ({exc})") from None
        names = [e.name for e in manifest.tensors] + [d.name for d in manifest.dense]
        if len(set(names)) != len(names):
            raise _Bad("a tensor is listed twice")
        if manifest.method_name != spec.name:
            raise _Bad(f"method_name {manifest.method_name!r} does not match the method options ({spec.name!r})")
        for e in manifest.tensors:
            _check_entry(e)
            _check_against_spec(spec, e)
        if "config.json" not in manifest.files:
            raise _Bad("config.json is not listed")
        if (spec.method == "fp") != (not manifest.tensors):
            raise _Bad(f"method {spec.method} does not match {len(manifest.tensors)} quantized tensors")
    check_files(root, manifest)
    expected = _expected(manifest.tensors)
    expected["dense.safetensors"] = {
        d.name: (_DTYPES.get(d.dtype, getattr(torch, d.dtype, None)), tuple(d.shape)) for d in manifest.dense
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
    dtype = _DTYPES.get(m.model_dtype)
    if dtype is None:
        raise QMCError(f"{root / MANIFEST_NAME}: unsupported model_dtype {m.model_dtype!r}; re-export the artifact")
    hf_logging.set_verbosity_error()
    with _file(root, "config.json"), warnings.catch_warnings():
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
                with _file(root, "dense.safetensors"):
                    t = targets.get(name)
                    if t is None or tuple(t.shape) != tuple(d.shape):
                        raise _Bad(f"tensor {name!r} {tuple(d.shape)} does not fit the model in config.json")
                    t.copy_(c.dense[d.name].to(t.dtype))
                    assigned.add(id(t))
        for name, qt in c.tensors.items():
            with _file(root, "reram.safetensors" if qt.code_memory == "reram" else "codes.safetensors"):
                p = params.get(name)
                if p is None or tuple(p.shape) != tuple(qt.shape):
                    raise _Bad(f"tensor {name!r} {qt.shape} does not fit the model in config.json")
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
            with _file(c.root, n):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(c.root / n, dst)
                if sha256_file(dst) != c.manifest.files[n].sha256:
                    raise _Bad("changed while loading (sha256 mismatch)")
        with _file(c.root, "tokenizer.json"), warnings.catch_warnings():
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
    device-noise realisation drawn exactly as ``QuantizedModel.realise(model, noise_seed)`` would)."""
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
