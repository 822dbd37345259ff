"""Training throughput per fusion mode, data pipeline, memory and cost growth: ``emolab bench``.

The same run as ``emolab bench`` (see :mod:`emolab.bench.train`), as a script:

    python benchmarks/bench_train.py --quick              # under 2 minutes on 2 cores
    python benchmarks/bench_train.py --modes audio,gated  # any flag of emolab bench
"""

from __future__ import annotations

from emolab.bench.train import main

if __name__ == "__main__":
    raise SystemExit(main())
