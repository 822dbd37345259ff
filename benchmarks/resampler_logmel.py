"""How much the resampler changes the log-Mel: torchaudio vs soxr.

The measure lives in :mod:`emolab.bench.resampler` (its docstring says what it measures and its flags); this script
runs it: ``python benchmarks/resampler_logmel.py --help``.
"""

from emolab.bench.resampler import main

if __name__ == "__main__":
    raise SystemExit(main())
