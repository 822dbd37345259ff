"""Using trained runs: predict on any clip (:mod:`emolab.eval.predict`), evaluate on any RAVDESS-layout corpus
(:mod:`emolab.eval.evaluate`), through one inference path (:mod:`emolab.eval.inference`); export to ONNX (:mod:`emolab.eval.export`,
:mod:`emolab.eval.onnx_runtime`).

The planned home of evaluation, robustness, prediction and export; ``emolab.robustness`` stays where it is
for now. Submodules import torch when used, so that ``emolab --help`` stays instant.
"""
