"""The interface every quantization method implements, and the option fields methods share.

A method is one pydantic class: its fields are exactly the options that change its result (unknown
or inapplicable keys are refused by ``extra="forbid"``), its :attr:`~MethodSpec.name` shows every
option that differs from the default, and :meth:`~MethodSpec.quantize` turns a model's target
weights into a :class:`~qmc_edge.quant.qmodel.QuantizedModel`. Methods are registered by name in
:mod:`qmc_edge.methods.registry`; adding one is a new module with one class and one ``@register``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from qmc_edge.memory.models import CellModel
from qmc_edge.memory.mram import MRAMBitFlips
from qmc_edge.methods.options import RERAM_DEFAULTS, reram_for_options
from qmc_edge.parallel import map_tensors
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor

Progress = Callable[[int, int], None]


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
        return self.cells().bits_per_cell if self.uses_reram else None

    def cells(self, for_search: bool = False) -> CellModel:
        """The ReRAM model that holds the codes (only for methods that use ReRAM): read at ``age``, or,
        with ``for_search``, at the ``target_age`` the noise-aware clip search optimises for."""
        if not self.uses_reram:
            raise ValueError(f"{self.name} stores no codes in ReRAM")
        opt = {k: getattr(self, k, None) for k in RERAM_DEFAULTS}
        opt = {k: (RERAM_DEFAULTS[k] if v is None else v) for k, v in opt.items()}
        age = opt["target_age"] if for_search else opt["age"]
        return reram_for_options(
            int(getattr(self, "cell_bits", 3) or 3),
            bool(getattr(self, "ideal_memory", False)),
            str(opt["cell_model"]),
            age,
            float(opt["noise_scale"]),
            bool(opt["write_verify"]),
            bool(opt["read_noise"]),
            str(opt["read_reference"]),
            None if opt["read_share"] is None else float(opt["read_share"]),
        )

    @property
    def layout(self) -> str:
        """How a partial last ReRAM cell holds its bits (qmc_edge.memory.cells)."""
        return str(getattr(self, "cell_layout", None) or "left")

    def mram(self) -> MRAMBitFlips:
        """The MRAM fault model: raw bit errors in every MRAM field, decoded through the ECC."""
        from qmc_edge.memory.mram import MRAMFaults

        return MRAMFaults(
            ber=float(getattr(self, "mram_ber", None) or 0.0), ecc=str(getattr(self, "mram_ecc", None) or "none")
        )

    @property
    def noisy(self) -> bool:
        """Whether reads are random, so that several seeds are meaningful."""
        if float(getattr(self, "mram_ber", None) or 0.0) > 0:  # None: a library method off ReRAM
            return True
        return self.uses_reram and not self.cells().is_ideal

    def tag_mram(self, qt: QuantizedTensor) -> QuantizedTensor:
        """Record this spec's MRAM error correction and ReRAM cell layout on a tensor it placed."""
        if qt.meta_memory == "mram":
            qt.mram_ecc = str(getattr(self, "mram_ecc", None) or "none")
        if qt.code_memory == "reram":
            qt.cell_layout = self.layout
        return qt

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
        lay["outlier_code"] = None
        lay["mram_ecc"] = str(getattr(self, "mram_ecc", None) or "none") if self.uses_reram else "none"
        lay["cell_layout"] = self.layout if self.uses_reram else "left"
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
        """Every tensor on its own, several at once (:mod:`qmc_edge.parallel`: one tensor per thread,
        single-threaded ops, the same codes for any number of workers)."""
        params = dict(model.named_parameters(remove_duplicate=False))
        t0 = time.perf_counter()
        weights = [params[n].detach().cpu() for n in names]  # quantizers and noise draws are defined on the CPU
        done = (lambda i: progress(i + 1, len(names))) if progress else None
        quantized = map_tensors(self.quantize_tensor, weights, done)
        tensors: dict[str, QuantizedTensor] = dict(zip(names, quantized, strict=True))
        # No copy of the weights here: the model is unchanged, and realise() keeps each original the
        # first time it overwrites it (a copy now would double the peak memory of quantization).
        return QuantizedModel(self, tensors, time.perf_counter() - t0)


def place_in_reram(qt: QuantizedTensor, cell_bits: int) -> QuantizedTensor:
    """Codes in multi-level ReRAM, scales and zero points in MRAM (a plain emerging-memory deployment)."""
    qt.code_memory, qt.cell_bits, qt.meta_memory = "reram", cell_bits, "mram"
    return qt
