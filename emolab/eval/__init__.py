"""Using trained runs and looking inside them.

* predict on any clip (:mod:`~emolab.eval.predict`), evaluate on any RAVDESS-layout corpus
  (:mod:`~emolab.eval.evaluate`), through one inference path (:mod:`~emolab.eval.inference`);
* export to ONNX (:mod:`~emolab.eval.export`, :mod:`~emolab.eval.onnx_runtime`);
* test-time corruptions (:mod:`~emolab.eval.robustness`), what notebooks 03-06 compute
  (:mod:`~emolab.eval.analysis`), the table of runs (:mod:`~emolab.eval.runs`) and what a
  notebook cell calls (:mod:`~emolab.eval.notebook`).

Submodules import torch when used, so that ``emolab --help`` stays instant.
"""
