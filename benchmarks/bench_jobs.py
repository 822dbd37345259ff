"""Several runs on one device: fold x seed runs per hour of `emolab cv --jobs N`.

The measure lives in :mod:`emolab.bench.jobs` (its docstring says what it measures); this script runs it:
``python benchmarks/bench_jobs.py --help``.
"""

from emolab.bench.jobs import main

if __name__ == "__main__":
    raise SystemExit(main())
