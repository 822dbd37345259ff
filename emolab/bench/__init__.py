"""Benchmarks: every measure that ``emolab bench`` and the scripts in ``benchmarks/`` print and write (timings are never test asserts)."""
