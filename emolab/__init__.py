"""emolab: a Jupyter-first research kit for audio-visual emotion recognition on RAVDESS."""

__version__ = "0.1.0"
