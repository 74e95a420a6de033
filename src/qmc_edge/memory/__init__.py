"""The memories, as data and fault models: ReRAM level tables and their time dependence (cell-model files,
:mod:`.files`), the ReRAM read model (:mod:`.models`) and how levels drift and read noise grows with time
(:mod:`.drift`), the mapping of codes onto multi-level cells
(:mod:`.cells`), MRAM bit flips and their SECDED code (:mod:`.mram`), and the counter-based random
streams that make a noise draw the same on any machine (:mod:`.counter_rng`).

Knows nothing of weights or models. May import only the package root (``errors``, ``datafile``).
"""
