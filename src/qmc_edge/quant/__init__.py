"""Quantization itself, tensor by tensor and model by model: the quantized tensor and what a read of it
returns (:mod:`.qtensor`, :mod:`.read`), the quantized model (:mod:`.qmodel`), grids and the clip
search with its compiled kernel (:mod:`.uniform`, :mod:`.clip_kernel`), the RTN/MXINT4/eMEM grids
(:mod:`.grids`), code-to-level maps (:mod:`.level_map`), GPTQ's solver and block pipeline
(:mod:`.gptq_solver`, :mod:`.gptq_blocks`), the Fisher sensitivity and calibration text
(:mod:`.sensitivity`, :mod:`.calibration`), the bit budget (:mod:`.budget`), and QMC as a pipeline
of stages (:mod:`.stages`).

May import :mod:`qmc_edge.memory` and the package root. Knows no method class: a method is passed
in as a spec whose options it reads.
"""
