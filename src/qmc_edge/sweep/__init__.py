"""Design-space sweeps: a spec file, a resumable Parquet results store, local and Ray executors, and
Pareto reports (`qmc sweep`, `qmc report`)."""
