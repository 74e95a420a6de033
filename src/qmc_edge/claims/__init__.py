"""The paper's four headline claims as a ledger of sourced steps from our default configuration
(:mod:`.ledger`, ``claims.yaml``), with measured accuracy read from results files and stores.

May import :mod:`qmc_edge.sweep` (stored results), :mod:`qmc_edge.deploy` (the cost model) and the
layers below them.
"""
