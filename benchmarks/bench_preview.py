"""Notebook 02's augmentation preview: seconds per re-render of a cached clip.

The measure lives in :mod:`emolab.bench.preview` (its docstring says what it measures and its flags); this script
runs it: ``python benchmarks/bench_preview.py --help``.
"""

from emolab.bench.preview import main

if __name__ == "__main__":
    raise SystemExit(main())
