"""Fault-injection campaigns: TOML specs, statistics, the SQLite store, executors
(local processes or Dask), progress, the report, and the ``orbithil campaign`` command."""
