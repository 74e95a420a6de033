"""Design-space sweeps: a spec file, a resumable Parquet results store, local and Ray executors, and
Pareto reports (`qmc sweep`, `qmc report`; the commands are :mod:`qmc_edge.cli.sweep_cmds`).

May import :mod:`qmc_edge.deploy`, :mod:`qmc_edge.model` and every layer below them.
"""
