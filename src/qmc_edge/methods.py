"""Method specifications: one validated object per quantization method and its options.

A spec is written on the command line as ``name`` or ``name:key=value,key=value``
(e.g. ``qmc:bits=2,cell_bits=2,rho=0.01``); presets give the rows people usually compare.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .baselines import quantize_emem_naive, quantize_mxint4, quantize_rtn
from .devices import DeviceModel, MRAMBitFlips, reram
from .qmc import quantize_qmc
from .qtensor import QuantizedTensor

MethodName = Literal["fp", "rtn", "mxint4", "emem", "qmc", "gptq", "awq", "hqq"]
# Produced by maintained libraries (qmc_edge.external); gptq and awq need calibration text.
EXTERNAL = ("gptq", "awq", "hqq")
CALIBRATED = ("gptq", "awq")


class MethodSpec(BaseModel):
    """A quantization method and every option that changes its result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MethodName
    bits: int = Field(4, description="inlier / code bits")
    group_size: int = Field(128, description="weights per scale along the input dim; 0 = per channel")
    cell_bits: int = Field(3, description="bits per ReRAM cell (emem, qmc)")
    rho: float = Field(0.01, description="outlier share per tensor (qmc)")
    outlier_bits: int = Field(8, description="bits per outlier code in MRAM (qmc)")
    n_clip: int = Field(20, description="clipping ratios searched per group (qmc)")
    noise_aware: bool = Field(True, description="include device read errors in the clip search (qmc)")
    rounding: Literal["nearest", "gptq"] = Field(
        "nearest", description="how qmc rounds inliers: to nearest, or GPTQ's error compensation (needs calibration)"
    )
    ideal_memory: bool = Field(False, description="error-free cells of the same size (ablation)")
    mram_ber: float = Field(0.0, description="MRAM bit error rate per read")
    quantize_embeddings: bool = Field(False, description="also quantize embeddings and output head")
    reram: bool = Field(False, description="codes in multi-level ReRAM, scales in MRAM (gptq, awq, hqq)")
    calib_samples: int = Field(64, description="calibration windows (gptq, awq, qmc with rounding=gptq)")
    calib_len: int = Field(512, description="tokens per calibration window (gptq, awq, qmc with rounding=gptq)")
    label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> MethodSpec:
        if self.method in ("rtn", "emem", "qmc", *EXTERNAL) and self.bits not in (2, 3, 4, 8):
            raise ValueError(f"bits={self.bits} is not supported; use 2, 3 or 4 (8 for rtn)")
        if self.method == "qmc" and self.bits not in (2, 3, 4):
            raise ValueError(f"qmc inlier bits must be 2, 3 or 4, got {self.bits}")
        if self.cell_bits not in (1, 2, 3):
            raise ValueError(f"cell_bits must be 1, 2 or 3, got {self.cell_bits}")
        if not 0.0 <= self.rho <= 0.5:
            raise ValueError(f"rho must be in [0, 0.5], got {self.rho}")
        if self.group_size < 0:
            raise ValueError(f"group_size must be >= 0 (0 = per channel), got {self.group_size}")
        if not 0.0 <= self.mram_ber < 1.0:
            raise ValueError(f"mram_ber must be in [0, 1), got {self.mram_ber}")
        if not 2 <= self.outlier_bits <= 16:
            raise ValueError(f"outlier_bits must be in 2..16, got {self.outlier_bits}")
        if self.rounding != "nearest" and self.method != "qmc":
            raise ValueError(f"rounding={self.rounding} applies to qmc; use the {self.rounding} method itself")
        if self.quantize_embeddings and self.calibrated:
            raise ValueError(f"{self.name} quantizes decoder Linear layers only; drop quantize_embeddings")
        if self.reram and self.method not in EXTERNAL:
            raise ValueError(f"reram applies to {', '.join(EXTERNAL)}; use emem for RTN codes in ReRAM")
        if self.calib_samples < 1 or self.calib_len < 2:
            raise ValueError(
                f"calibration needs calib_samples >= 1 and calib_len >= 2, got {self.calib_samples}, {self.calib_len}"
            )
        return self

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        g = "pc" if self.group_size == 0 else f"g{self.group_size}"
        m = self.method
        if m == "fp":
            return "FP (reference)"
        if m == "rtn":
            return f"RTN-INT{self.bits} {g}"
        if m == "mxint4":
            return "MXINT4"
        ideal = " ideal" if self.ideal_memory else ""
        if m in EXTERNAL:
            if self.reram:
                return f"eMEM-{m.upper()} {self.bits}b {g} @{self.cell_bits}b/cell{ideal}"
            return f"{m.upper()}-INT{self.bits} {g}"
        if m == "emem":
            return f"eMEM-naive {self.bits}b {g} @{self.cell_bits}b/cell{ideal}"
        na = "" if self.noise_aware else " no-NA"
        qmc = "QMC+GPTQ" if self.rounding == "gptq" else "QMC"
        return f"{qmc} {self.bits}b {g} rho={self.rho:g} @{self.cell_bits}b/cell{na}{ideal}"

    @property
    def calibrated(self) -> bool:
        """Whether the method reads calibration text (and so needs the tokenizer)."""
        return self.method in CALIBRATED or self.rounding == "gptq"

    @property
    def uses_reram(self) -> bool:
        return self.method in ("emem", "qmc") or (self.method in EXTERNAL and self.reram)

    @property
    def noisy(self) -> bool:
        """Whether reads are random, so that several seeds are meaningful."""
        if self.mram_ber > 0 and self.method == "qmc":
            return True
        return self.uses_reram and not self.device().is_ideal

    def device(self) -> DeviceModel:
        return reram(self.cell_bits, ideal=self.ideal_memory)

    def mram(self) -> MRAMBitFlips:
        return MRAMBitFlips(ber=self.mram_ber)

    def quantize_tensor(self, w: torch.Tensor) -> QuantizedTensor:
        g = self.group_size or None
        if self.method == "rtn":
            return quantize_rtn(w, self.bits, g)
        if self.method == "mxint4":
            return quantize_mxint4(w)
        if self.method == "emem":
            return quantize_emem_naive(w, self.bits, self.device(), g)
        if self.method == "hqq":
            from .external.hqq_adapter import quantize_hqq

            return self.place(quantize_hqq(w, self.bits, g))
        if self.method == "qmc" and self.rounding == "nearest":
            return quantize_qmc(
                w,
                self.bits,
                self.device(),
                rho=self.rho,
                group_size=g,
                outlier_bits=self.outlier_bits,
                n_clip=self.n_clip,
                noise_aware=self.noise_aware,
            )
        raise ValueError(f"method {self.name!r} does not quantize tensor by tensor (it needs the whole model)")

    def place(self, qt: QuantizedTensor) -> QuantizedTensor:
        """Put a library baseline's codes where this spec says: ideal memory, or ReRAM with the
        scales and zero points in MRAM, as eMEM-naive places RTN codes."""
        if self.reram:
            qt.code_memory, qt.cell_bits, qt.meta_memory = "reram", self.cell_bits, "mram"
        return qt


PRESETS: dict[str, str] = {
    "fp": "fp",
    "rtn4": "rtn:bits=4",
    "rtn3": "rtn:bits=3",
    "rtn2": "rtn:bits=2",
    "rtn4-pc": "rtn:bits=4,group_size=0",
    "rtn3-pc": "rtn:bits=3,group_size=0",
    "mxint4": "mxint4",
    "emem3": "emem:bits=3,cell_bits=3",
    "emem4": "emem:bits=4,cell_bits=2",
    "qmc3": "qmc:bits=3,cell_bits=3,rho=0.01",
    "qmc2": "qmc:bits=2,cell_bits=2,rho=0.01",
    "qmc4": "qmc:bits=4,cell_bits=2,rho=0.01",
    "qmc3-gptq": "qmc:bits=3,cell_bits=3,rho=0.01,rounding=gptq",
    "qmc2-gptq": "qmc:bits=2,cell_bits=2,rho=0.01,rounding=gptq",
    "gptq4": "gptq:bits=4",
    "gptq3": "gptq:bits=3",
    "awq4": "awq:bits=4",
    "awq3": "awq:bits=3",
    "hqq4": "hqq:bits=4",
    "hqq3": "hqq:bits=3",
    "emem-gptq3": "gptq:bits=3,reram=true,cell_bits=3",
    "emem-gptq4": "gptq:bits=4,reram=true,cell_bits=2",
    "emem-awq3": "awq:bits=3,reram=true,cell_bits=3",
    "emem-awq4": "awq:bits=4,reram=true,cell_bits=2",
    "emem-hqq3": "hqq:bits=3,reram=true,cell_bits=3",
}


def _coerce(value: str) -> object:
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_method(text: str, **overrides: object) -> MethodSpec:
    """Parse ``name`` / ``preset`` / ``name:key=value,...``; raises ValueError with a one-line reason."""
    text = text.strip()
    base, _, opts = text.partition(":")
    fields: dict[str, object] = {}
    if base in PRESETS and base not in ("fp", "mxint4"):
        pb, _, popts = PRESETS[base].partition(":")
        base = pb
        for kv in filter(None, popts.split(",")):
            k, v = kv.split("=", 1)
            fields[k] = _coerce(v)
    for kv in filter(None, opts.split(",")):
        if "=" not in kv:
            raise ValueError(f"method option {kv!r} in {text!r} is not key=value")
        k, v = kv.split("=", 1)
        fields[k.strip()] = _coerce(v.strip())
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if base not in MethodName.__args__:  # type: ignore[attr-defined]
        known = ", ".join(list(MethodName.__args__) + sorted(PRESETS))  # type: ignore[attr-defined]
        raise ValueError(f"unknown method {base!r}; use one of: {known}")
    try:
        return MethodSpec(method=base, **fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "method"
        msg = err["msg"].removeprefix("Value error, ")
        raise ValueError(f"bad method {text!r}: {loc}: {msg}") from None
