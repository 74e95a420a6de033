"""What the baselines from maintained libraries (GPTQ, AWQ, HQQ) share: their codes in ideal memory,
or with ``reram=true`` in multi-level ReRAM with the scales in MRAM (like eMEM-naive)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from qmc_edge.methods.base import MethodSpec, place_in_reram
from qmc_edge.methods.options import (
    RERAM_DEFAULTS,
    OptionalReRAMOptions,
    bits_field,
    cell_field,
    check_bits,
    check_cells,
    check_group,
    check_mram,
    group_field,
)
from qmc_edge.methods.rtn import group_label
from qmc_edge.quant.qtensor import QuantizedTensor


class LibraryMethod(OptionalReRAMOptions, MethodSpec):
    bits: int = bits_field()
    group_size: int = group_field()
    reram: bool = Field(False, description="codes in multi-level ReRAM, scales and zero points in MRAM")
    cell_bits: int | None = cell_field(None)
    ideal_memory: bool | None = Field(None, description="error-free cells of the same size (with reram=true)")
    mram_ber: float | None = Field(None, description="MRAM raw bit error rate per read (with reram=true)")
    mram_ecc: Literal["none", "secded"] | None = Field(None, description="MRAM error correction (with reram=true)")

    shown = frozenset({"bits", "group_size", "reram", "cell_bits", "ideal_memory"})
    implied = {"mram_ber": 0.0, "mram_ecc": "none", **{k: v for k, v in RERAM_DEFAULTS.items() if k != "target_age"}}

    @model_validator(mode="before")
    @classmethod
    def _placement(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("reram"):
            data.setdefault("cell_bits", 3)
            data.setdefault("ideal_memory", False)
            data.setdefault("mram_ber", 0.0)
            data.setdefault("mram_ecc", "none")
            for key, value in RERAM_DEFAULTS.items():
                if key != "target_age" and value is not None:
                    data.setdefault(key, value)
        else:
            for key in ("cell_bits", "ideal_memory", "mram_ber", "mram_ecc", *RERAM_DEFAULTS):
                if data.get(key) is not None:
                    raise ValueError(f"{key} applies only with reram=true (codes in ReRAM)")
        return data

    @model_validator(mode="after")
    def _check_library(self) -> LibraryMethod:
        check_bits(self.bits, (2, 3, 4, 8), self.method)
        check_group(self.group_size)
        check_cells(self.cell_bits)
        check_mram(self.mram_ber or 0.0)
        return self

    def base_name(self) -> str:
        g = group_label(self.group_size)
        if self.reram:
            ideal = " ideal" if self.ideal_memory else ""
            return f"eMEM-{self.method.upper()} {self.bits}b {g} @{self.cell_bits}b/cell{ideal}"
        return f"{self.method.upper()}-INT{self.bits} {g}"

    @property
    def stored_in_text(self) -> str:
        return "ReRAM, scales in MRAM" if self.reram else "ideal memory"

    @property
    def uses_reram(self) -> bool:
        return self.reram

    def expected_layout(self, shape: tuple[int, int]) -> dict[str, object]:
        lay = super().expected_layout(shape)
        lay.pop("group_size", None)  # the library's own grouping convention; its codes are checked on load
        return lay

    def place(self, qt: QuantizedTensor) -> QuantizedTensor:
        """Put the library's codes where this spec says: ideal memory, or ReRAM with metadata in MRAM."""
        return self.tag_mram(place_in_reram(qt, int(self.cell_bits))) if self.reram else qt
