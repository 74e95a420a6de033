"""The QMC stages and the pipeline that composes them.

Owns: the stage registry (:mod:`.kinds`), one module per stage kind with its built-in stages
(:mod:`.config`, :mod:`.rounding`, :mod:`.outliers`, :mod:`.grid`, :mod:`.levels`), and the pipeline
(:mod:`.pipeline`). May import the rest of :mod:`qmc_edge.quant`, :mod:`qmc_edge.memory` and the
package root; nothing here knows the methods (a method is passed in as the ``spec`` whose options
name the stages).
"""

from qmc_edge.quant.stages import config, grid, levels, outliers, rounding  # noqa: F401  (register the stages)
