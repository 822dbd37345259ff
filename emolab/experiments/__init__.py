"""Experiments over many training runs: cross-validation (:mod:`~emolab.experiments.cv`) and hyper-parameter search (:mod:`~emolab.experiments.search`)."""
