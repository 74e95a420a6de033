"""Models and their evaluation: loading a GGUF, HF folder, hub id or artifact (:mod:`.loading`),
WikiText-2 perplexity (:mod:`.perplexity`), and the runner that quantizes once and evaluates each
noise seed (:mod:`.runner`, behind ``qmc ppl``, ``compare``, ``tasks`` and ``demo``).

May import :mod:`qmc_edge.artifact`, :mod:`qmc_edge.tasks`, :mod:`qmc_edge.methods`,
:mod:`qmc_edge.quant`, :mod:`qmc_edge.memory` and the package root.
"""
