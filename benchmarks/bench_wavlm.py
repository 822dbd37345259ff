"""The WavLM feature cache alone: a stage-1 epoch with and without it, and the fill, at RAVDESS's size.

The measure lives in :mod:`emolab.bench.wavlm` (``emolab bench --wavlm`` runs it beside the other figures);
this script runs it alone: ``python benchmarks/bench_wavlm.py --help``.
"""

from emolab.bench.wavlm import main

if __name__ == "__main__":
    raise SystemExit(main())
