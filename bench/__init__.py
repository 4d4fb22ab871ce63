"""The durably benchmark suite: ``python -m bench`` (``--quick`` for a smoke run). See bench/README.md."""
