"""QMC: outlier-aware quantization with memory co-design for small language models.

The package is layered; each layer imports only the package root's small modules and the layers
below it (``tests/test_imports.py`` enforces it, type-only imports included):

1. ``memory``: the memories as data and fault models (cells, cell-model files, ReRAM, MRAM, ECC, RNG);
2. ``quant``: quantized tensors and models, grids, clip search, GPTQ, budget, the QMC stages;
3. ``libraries``: adapters that turn llm-compressor's and HQQ's results into our tensors;
4. ``methods``: the method registry, shared options, the whole-model driver and storage report;
5. ``tasks``: zero-shot task data and lm-evaluation-harness scoring;
6. ``artifact``: export and load of quantized models as the hardware would hold them;
7. ``model``: loading models, perplexity, the evaluation runner;
8. ``deploy``: platforms and the system cost model;
9. ``sweep``: sweep specs, the results store, runs and reports;
10. ``claims``: the paper's claims ledger;
11. ``cli``: the ``qmc`` command.

At the root: ``errors``, ``fileio``, ``jsonio``, ``datafile`` (the one loader of validated data
files), ``parallel``, ``torch_device`` ("device" always means a torch device), ``loaded``,
``provenance`` (the git commit every result records).
"""

__version__ = "0.1.0"
