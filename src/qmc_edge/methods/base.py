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
from functools import lru_cache
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qmc_edge.memory.models import DeviceModel, MRAMBitFlips, reram
from qmc_edge.parallel import map_tensors
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor

Progress = Callable[[int, int], None]


def bits_field(default: int = 4) -> Any:
    return Field(default, description="code bits per weight (inlier bits for qmc)")


def group_field() -> Any:
    return Field(128, description="weights per scale along the input dim; 0 = per channel")


def cell_field(default: int | None = 3) -> Any:
    return Field(default, description="bits per ReRAM cell: 1, 2 or 3")


def ideal_field() -> Any:
    return Field(False, description="error-free cells of the same size (ablation)")


# ReRAM device options (emem, qmc, and the library methods with reram=true): which device file, when
# the cells are read (age since programming), what the clip search targets, and what-if knobs.
DEVICE_DEFAULTS: dict[str, object] = {
    "reram_device": "nvmexplorer_rram",
    "age": None,
    "target_age": None,
    "noise_scale": 1.0,
    "write_verify": False,
    "read_noise": False,
    "read_share": None,
    "read_reference": "fixed",
    "cell_layout": "left",
}
DEVICE_HELP = {
    "reram_device": "ReRAM device file: a shipped name (`qmc devices`) or a path to a copy you edited",
    "age": "time since programming at which the cells are read: 1s, 1h, 1d, 1y, 10y or seconds (default fresh)",
    "target_age": "age the noise-aware clip search optimises for (qmc; default fresh)",
    "noise_scale": "multiplier on the programmed level sigmas (what if cells are k times as noisy)",
    "write_verify": "tighter write-verify programming (narrower programmed sigmas, sourced factor)",
    "read_noise": "add the device file's per-read conductance noise, redrawn at every read of a chip",
    "read_share": "what if a fraction (0-1) of each level's total variance were per-read noise (same error rate)",
    "read_reference": "read thresholds: fixed (at the fresh levels) or aged (tracking the drift)",
    "cell_layout": "partial last cell: left (low edge of the levels) or spread (over the whole range)",
}


def device_fields(optional: bool = False) -> dict[str, Any]:
    """pydantic Field objects for the ReRAM device options (None defaults when ``optional``)."""
    return {k: Field(None if optional else v, description=DEVICE_HELP[k]) for k, v in DEVICE_DEFAULTS.items()}


def check_device_options(spec: Any) -> None:
    """Validate the device options of ``spec`` (ages parse, scale positive, the device file loads)."""
    from qmc_edge.memory.files import load_device, parse_age

    for key in ("age", "target_age"):
        v = getattr(spec, key, None)
        if v is not None:
            parse_age(v)
    rs = getattr(spec, "read_share", None)
    if rs is not None and not 0 <= rs <= 1:
        raise ValueError(f"read_share must be in [0, 1], got {rs}")
    ns = spec.noise_scale
    if ns is not None and not 0 < ns <= 100:
        raise ValueError(f"noise_scale must be in (0, 100], got {ns}")
    dev = spec.reram_device
    if dev is not None:
        load_device(dev)
    # Options that would do nothing are refused, so that a label never claims what was not run.
    bits, cells = getattr(spec, "bits", None), getattr(spec, "cell_bits", None)
    if getattr(spec, "cell_layout", None) == "spread" and bits and cells and bits % cells == 0:
        raise ValueError(f"cell_layout=spread applies only when cell_bits does not divide bits ({bits} / {cells})")
    if getattr(spec, "read_reference", None) == "aged" and getattr(spec, "age", None) is None:
        raise ValueError("read_reference=aged applies only with an age (the fresh thresholds are the same)")
    if getattr(spec, "target_age", None) is not None and getattr(spec, "noise_aware", True) is False:
        raise ValueError("target_age applies only to the noise-aware clip search; drop noise_aware=false or target_age")


@lru_cache(maxsize=64)
def _reram_model(
    cell_bits: int, ideal: bool, dev: str, age: object, scale: float, wv: bool, rn: bool, ref: str, share: float | None
):
    return reram(
        cell_bits,
        ideal=ideal,
        device=dev,
        age_s=0.0 if age is None else age,
        noise_scale=scale,
        write_verify=wv,
        read_noise=rn,
        reference=ref,
        read_share=share,
    )


def mram_ber_field() -> Any:
    return Field(0.0, description="MRAM raw bit error rate per read, every MRAM field, in [0, 1)")


def mram_ecc_field() -> Any:
    return Field("none", description="MRAM error correction: none, or secded (Hamming(72,64) per 64-bit word)")


def check_mram(ber: float) -> None:
    if not 0.0 <= ber < 1.0:
        raise ValueError(f"mram_ber must be in [0, 1), got {ber}")


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

    def device(self, for_search: bool = False) -> DeviceModel:
        """The ReRAM model that holds the codes (only for methods that use ReRAM): read at ``age``, or,
        with ``for_search``, at the ``target_age`` the noise-aware clip search optimises for."""
        if not self.uses_reram:
            raise ValueError(f"{self.name} stores no codes in ReRAM")
        opt = {k: getattr(self, k, None) for k in DEVICE_DEFAULTS}
        opt = {k: (DEVICE_DEFAULTS[k] if v is None else v) for k, v in opt.items()}
        age = opt["target_age"] if for_search else opt["age"]
        return _reram_model(
            int(getattr(self, "cell_bits", 3) or 3),
            bool(getattr(self, "ideal_memory", False)),
            str(opt["reram_device"]),
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
        return self.uses_reram and not self.device().is_ideal

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


_F = device_fields()
_O = device_fields(optional=True)


class ReRAMOptions(BaseModel):
    """The ReRAM device options of a method whose codes always live in ReRAM (emem, qmc)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    reram_device: str = _F["reram_device"]
    age: str | float | None = _F["age"]
    noise_scale: float = _F["noise_scale"]
    write_verify: bool = _F["write_verify"]
    read_noise: bool = _F["read_noise"]
    read_share: float | None = _F["read_share"]
    read_reference: Literal["fixed", "aged"] = _F["read_reference"]
    cell_layout: Literal["left", "spread"] = _F["cell_layout"]

    @model_validator(mode="after")
    def _check_device(self) -> ReRAMOptions:
        check_device_options(self)
        return self


class OptionalReRAMOptions(BaseModel):
    """The same options where ReRAM is optional (reram=true): None unless the codes are in ReRAM."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    reram_device: str | None = _O["reram_device"]
    age: str | float | None = _O["age"]
    noise_scale: float | None = _O["noise_scale"]
    write_verify: bool | None = _O["write_verify"]
    read_noise: bool | None = _O["read_noise"]
    read_share: float | None = _O["read_share"]
    read_reference: Literal["fixed", "aged"] | None = _O["read_reference"]
    cell_layout: Literal["left", "spread"] | None = _O["cell_layout"]

    @model_validator(mode="after")
    def _check_device(self) -> OptionalReRAMOptions:
        check_device_options(self)
        return self


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
