"""Face detectors (``--face_detector haar|mtcnn``): detection rate and cost per clip.

The measure lives in :mod:`emolab.bench.faces` (its docstring says what it measures and its flags); this script
runs it: ``python benchmarks/face_detectors.py --help``.
"""

from emolab.bench.faces import main

if __name__ == "__main__":
    raise SystemExit(main())
