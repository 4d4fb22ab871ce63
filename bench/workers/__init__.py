"""Worker programs the benchmarks start as subprocesses (``python -m bench.workers.NAME``)."""
