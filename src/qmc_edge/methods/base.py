"""The interface every quantization method implements, and the option fields methods share.

A method is one pydantic class: its fields are exactly the options that change its result (unknown
or inapplicable keys are refused by ``extra="forbid"``), its :attr:`~MethodSpec.name` shows every
option that differs from the default, and :meth:`~MethodSpec.quantize` turns a model's target
weights into a :class:`~qmc_edge.qmodel.QuantizedModel`. Methods are registered by name in
:mod:`qmc_edge.methods.registry`; adding one is a new module with one class and one ``@register``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..devices import DeviceModel, MRAMBitFlips, reram
from ..qmodel import QuantizedModel
from ..qtensor import QuantizedTensor

Progress = Callable[[int, int], None]


def bits_field(default: int = 4) -> Any:
    return Field(default, description="code bits per weight (inlier bits for qmc)")


def group_field() -> Any:
    return Field(128, description="weights per scale along the input dim; 0 = per channel")


def cell_field(default: int | None = 3) -> Any:
    return Field(default, description="bits per ReRAM cell: 1, 2 or 3")


def ideal_field() -> Any:
    return Field(False, description="error-free cells of the same size (ablation)")


def embeddings_field() -> Any:
    return Field(False, description="also quantize the embeddings and output head (tied ones once)")


def check_bits(bits: int, allowed: tuple[int, ...], method: str) -> None:
    if bits not in allowed:
        raise ValueError(f"{method} takes bits in {{{', '.join(map(str, allowed))}}}, got {bits}")


def check_group(group_size: int) -> None:
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0 = per channel), got {group_size}")


def check_cells(cell_bits: int | None) -> None:
    if cell_bits is not None and cell_bits not in (1, 2, 3):
        raise ValueError(f"cell_bits must be 1, 2 or 3, got {cell_bits}")


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


class MethodSpec(BaseModel):
    """A quantization method and every option that changes its result (subclass per method)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    method: str
    label: str | None = Field(None, description="row name to print instead of the generated one")

    summary: ClassVar[str] = ""  # one line for `qmc methods`
    stored_in: ClassVar[str] = "ideal memory"  # where the codes live, for `qmc methods`
    # Options that base_name() already shows; every other option off its default is appended.
    shown: ClassVar[frozenset[str]] = frozenset()
    # Defaults that a validator fills in where a field's declared default is None.
    implied: ClassVar[dict[str, object]] = {}
    # What to use instead, for options people reach for on the wrong method (shown with the error).
    hints: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ naming
    def base_name(self) -> str:
        return self.method

    @property
    def name(self) -> str:
        """The row label: every option that changes the result appears in it."""
        if self.label:
            return self.label
        extra = []
        for key, f in type(self).model_fields.items():
            if key in ("method", "label") or key in self.shown:
                continue
            value = getattr(self, key)
            default = self.implied.get(key, f.default)
            if value != default and value is not None:
                extra.append(f"{key}={_fmt(value)}")
        return " ".join([self.base_name(), *extra])

    # ------------------------------------------------------------------ properties the pipeline reads
    @property
    def nominal_bits(self) -> int:
        """Bits per code (the 'bits' column); 16 for the reference."""
        return int(getattr(self, "bits", 16))

    @property
    def calibrated(self) -> bool:
        """Whether the method reads calibration text (and so needs the tokenizer)."""
        return False

    @property
    def quantizes_embeddings(self) -> bool:
        return bool(getattr(self, "quantize_embeddings", False))

    @property
    def uses_reram(self) -> bool:
        return False

    @property
    def cell_bits_used(self) -> int | None:
        """Bits per ReRAM cell when the codes live in ReRAM, else None."""
        return self.device().bits_per_cell if self.uses_reram else None

    def device(self) -> DeviceModel:
        """The ReRAM model that holds the codes (only for methods that use ReRAM)."""
        if not self.uses_reram:
            raise ValueError(f"{self.name} stores no codes in ReRAM")
        return reram(int(getattr(self, "cell_bits", 3) or 3), ideal=bool(getattr(self, "ideal_memory", False)))

    def mram(self) -> MRAMBitFlips:
        return MRAMBitFlips(ber=float(getattr(self, "mram_ber", 0.0)))

    @property
    def noisy(self) -> bool:
        """Whether reads are random, so that several seeds are meaningful."""
        return self.uses_reram and not self.device().is_ideal

    def expected_layout(self, shape: tuple[int, int]) -> dict[str, object]:
        """What every quantized tensor of this method must look like (artifacts are checked
        against it): where codes and metadata live, bits per cell, code bits, group size."""
        lay: dict[str, object] = {"code_memory": "reram" if self.uses_reram else "dram"}
        lay["meta_memory"] = "mram" if self.uses_reram else "dram"
        if self.uses_reram:
            lay["cell_bits"] = self.cell_bits_used
        if hasattr(self, "bits"):
            lay["bits"] = int(self.bits)
        if hasattr(self, "group_size"):
            lay["group_size"] = min(int(self.group_size) or shape[1], shape[1])
        lay["outlier_bits"] = None
        return lay

    # ------------------------------------------------------------------ quantization
    def quantize(
        self,
        model: torch.nn.Module,
        names: list[str],
        tokenizer: object | None = None,
        progress: Progress | None = None,
    ) -> QuantizedModel | None:
        """Quantize the parameters ``names`` of ``model`` (left unchanged); None for the reference."""
        raise NotImplementedError


class TensorMethod(MethodSpec):
    """A method that quantizes each weight tensor on its own (no calibration, no model pass)."""

    def quantize_tensor(self, w: torch.Tensor) -> QuantizedTensor:
        raise NotImplementedError

    def quantize(self, model, names, tokenizer=None, progress=None) -> QuantizedModel:
        params = dict(model.named_parameters(remove_duplicate=False))
        t0 = time.perf_counter()
        tensors: dict[str, QuantizedTensor] = {}
        reference: dict[str, torch.Tensor] = {}
        for i, name in enumerate(names):
            w = params[name].detach().cpu()  # quantizers and noise draws are defined on the CPU
            reference[name] = w.clone()
            tensors[name] = self.quantize_tensor(w)
            if progress:
                progress(i + 1, len(names))
        return QuantizedModel(self, tensors, time.perf_counter() - t0, reference)


def place_in_reram(qt: QuantizedTensor, cell_bits: int) -> QuantizedTensor:
    """Codes in multi-level ReRAM, scales and zero points in MRAM (a plain emerging-memory deployment)."""
    qt.code_memory, qt.cell_bits, qt.meta_memory = "reram", cell_bits, "mram"
    return qt
