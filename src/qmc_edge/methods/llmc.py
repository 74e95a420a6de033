"""What GPTQ and AWQ share: llm-compressor's one-shot run on calibration text, read back as the
project's own quantized tensors (:mod:`qmc_edge.libraries.llmcompressor_adapter`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import model_validator

from qmc_edge.errors import QMCError
from qmc_edge.methods.library import LibraryMethod
from qmc_edge.methods.options import CALIB_LEN, CALIB_SAMPLES, c_len, c_samples, check_calibration, fill_calibration
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.torch_device import model_device


class LLMCompressorMethod(LibraryMethod):
    calib_samples: int | None = c_samples
    calib_len: int | None = c_len

    stored_in = "ideal memory (reram=true: ReRAM)"
    implied = {**LibraryMethod.implied, "calib_samples": CALIB_SAMPLES, "calib_len": CALIB_LEN}

    @model_validator(mode="before")
    @classmethod
    def _calibration(cls, data: Any) -> Any:
        return fill_calibration(data, True, "gptq, awq")

    @model_validator(mode="after")
    def _check_calibration(self) -> LLMCompressorMethod:
        check_calibration(self.calib_samples, self.calib_len)
        return self

    @property
    def calibrated(self) -> bool:
        return True

    def quantize(self, model, names, tokenizer=None, progress=None) -> QuantizedModel:
        from qmc_edge.libraries.llmcompressor_adapter import quantize_llmc

        if model_device(model).type != "cpu":
            raise QMCError(f"{self.name} runs its calibration on the CPU here; load the model with --device cpu")
        tensors, overrides, seconds, info = quantize_llmc(
            model,
            names,
            self.method,
            self.bits,
            self.group_size,
            tokenizer,
            self.calib_samples,
            self.calib_len,
            progress,
        )
        params = dict(model.named_parameters(remove_duplicate=False))
        placed = {n: self.place(replace(qt)) for n, qt in tensors.items()}  # shallow copies: the cache stays ideal
        reference = {n: params[n].detach().clone() for n in [*names, *overrides]}
        return QuantizedModel(self, placed, seconds, reference, overrides, info)
