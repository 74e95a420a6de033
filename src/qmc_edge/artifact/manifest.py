"""The artifact manifest: what the directory holds, how it was made, and how to check it.

The manifest is the only file that describes the others, so it is validated strictly (pydantic,
unknown keys refused) and carries its own checksum: a sha256 over its canonical JSON without the
``checksum`` field. A hand edit of any field (a shape, a bit width, a method option) is therefore
refused instead of producing a silently different model. The format version is checked before
anything else, so an artifact from a newer qmc-edge gets a clear "upgrade" message rather than a
validation error about fields this version does not know.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

FORMAT_NAME = "qmc-edge-artifact"
FORMAT_VERSION = 2  # 2: method options per method (registry); 1: one flat option set
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of the artifact: its size and sha256, checked before it is read."""

    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class OutlierEntry(_Strict):
    """The MRAM outlier table of one tensor (values in ``mram.safetensors``)."""

    count: int = Field(ge=0)
    bits: int = Field(ge=2, le=16)  # codes, stored offset by 2**(bits-1)
    col_bits: int = Field(ge=1, le=32)  # ceil(log2(in_features)) per outlier
    count_bits: int = Field(ge=1, le=32)  # ceil(log2(in_features + 1)) per row
    # "offset": sign + magnitude above the threshold in <name>.outlier_offset (qmc_edge.quant.qtensor);
    # written only when not "symmetric", so artifacts with the symmetric code are unchanged.
    code: Literal["symmetric", "offset"] = "symmetric"

    @model_serializer(mode="wrap")
    def _omit_default(self, handler):
        data = handler(self)
        if data.get("code") == "symmetric":
            del data["code"]
        return data


class TensorEntry(_Strict):
    """One quantized weight: everything needed to rebuild its QuantizedTensor from the files."""

    name: str
    shape: tuple[int, int]
    bits: int = Field(ge=1, le=8)
    group_size: int = Field(ge=1)
    n_groups: int = Field(ge=1)
    code_memory: Literal["reram", "dram"]
    cell_bits: int = Field(ge=0, le=8)  # bits per ReRAM cell; 0 for dram codes
    meta_memory: Literal["mram", "dram"]
    scale_bits: int  # what the storage report counts (16 = fp16, 8 = E8M0)
    zero_bits: int | None  # None: same as code bits; 0: fixed zero point
    scale_encoding: Literal["e8m0", "float16", "float32"]  # how the scales are stored (always exact)
    # "packed": integers at zero_bits; "const": one fixed value (zero_bits == 0, in zero_const);
    # "float16"/"float32": non-integer zero points (e.g. HQQ), in whichever dtype holds them exactly
    zero_encoding: Literal["packed", "const", "float16", "float32"] = "packed"
    zero_const: float | None = None
    outliers: OutlierEntry | None = None
    # ECC of the MRAM fields ("secded": Hamming(72,64) per 64-bit word; see qmc_edge.quant.read). The
    # check bits are not in the files (the memory computes them when it is written) but are in the
    # storage report. Written only when not "none", so artifacts without ECC are unchanged.
    mram_ecc: Literal["none", "secded"] = "none"
    # Placement of a partial last ReRAM cell (qmc_edge.memory.cells); written only when not "left".
    cell_layout: Literal["left", "spread"] = "left"
    # Whether the ReRAM cells hold the codes through a code-to-level permutation (qmc_edge.quant.level_map),
    # kept in mram.safetensors as "<name>.level_map"; written only when true.
    level_map: bool = False

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler):
        data = handler(self)
        if data.get("mram_ecc") == "none":
            del data["mram_ecc"]
        if data.get("cell_layout") == "left":
            del data["cell_layout"]
        if not data.get("level_map"):
            data.pop("level_map", None)
        return data


class DenseEntry(_Strict):
    """One unquantized tensor (embeddings, norms, head) and the parameter names that share it."""

    name: str
    aliases: list[str] = []  # tied parameters (e.g. lm_head.weight tied to the embeddings)
    shape: list[int]
    dtype: str  # dtype in the file
    exact: bool  # whether the stored dtype holds the model's values exactly


class Manifest(_Strict):
    """Everything about one exported model; see :mod:`qmc_edge.artifact` for the layout."""

    format: Literal["qmc-edge-artifact"]
    format_version: int
    created: str
    model_source: str
    model_note: str
    model_revision: str | None
    architectures: list[str]
    model_dtype: str  # dtype of the model the loader builds (that of the quantized reference)
    method: dict  # MethodSpec.model_dump(): every option
    method_name: str
    quantize_seconds: float
    dense_dtype: str
    dense_exact: bool  # every unquantized tensor exactly representable in dense_dtype
    storage_report: dict
    packed_bytes: int  # the tensor files (header included), to compare with storage_report model_MB
    libraries: dict[str, str]
    tensors: list[TensorEntry]  # noise streams are keyed by tensor name, so the order changes nothing
    dense: list[DenseEntry]
    files: dict[str, FileEntry]
    checksum: str = ""


def body_checksum(data: dict) -> str:
    """sha256 of the canonical JSON of a manifest dict without its ``checksum`` field."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def manifest_text(data: dict) -> str:
    """The one serialisation of a manifest; the loader refuses any other (whitespace edits included),
    so that every changed byte of the file is detected."""
    return json.dumps(data, indent=1, ensure_ascii=True, allow_nan=False) + "\n"


def sealed(manifest: Manifest) -> Manifest:
    """The manifest with its checksum filled in (what gets written)."""
    data = manifest.model_dump(mode="json")
    return manifest.model_copy(update={"checksum": body_checksum(data)})
