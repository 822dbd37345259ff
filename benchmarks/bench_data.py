"""Data pipeline: naive decode vs emolab's cache, cold and warm, clips/s.

The measure lives in :mod:`emolab.bench.data` (its docstring says what it measures and its flags); this script
runs it: ``python benchmarks/bench_data.py --help``.
"""

from emolab.bench.data import main

if __name__ == "__main__":
    raise SystemExit(main())
