"""Benchmarks (`make bench`): every ``*_bench.py`` module here exposes ``run() -> dict``."""
