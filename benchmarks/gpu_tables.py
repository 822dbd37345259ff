"""The markdown tables of issue 18's figures from the results JSON files (``gpu_session.sh``'s, or ``--set cpu``).

The code lives in :mod:`emolab.bench.tables`; this script runs it: ``python benchmarks/gpu_tables.py --help``.
"""

from emolab.bench.tables import main

if __name__ == "__main__":
    raise SystemExit(main())
