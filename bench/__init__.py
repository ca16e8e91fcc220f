"""Benchmarks (``make bench``): each module runs with ``python -m bench.NAME``; not part of ``make test``."""
