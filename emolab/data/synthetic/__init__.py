"""The generated demo corpus: RAVDESS's layout and names, synthetic faces and voices.

:mod:`~emolab.data.synthetic.config` says what to generate, :mod:`~emolab.data.synthetic.media`
draws the audio and frames of one recording (pure numpy/cv2), and
:mod:`~emolab.data.synthetic.corpus` encodes and writes them (MP4, WAV, manifest).

Names are imported lazily (PEP 562), as in :mod:`emolab.data`: ``emolab --help`` and
the config do not pay for PyAV and OpenCV.
"""

from __future__ import annotations

from emolab.utils.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DEFAULT_DEMO_DIR": "config",
    "DemoConfig": "config",
    "parse_size": "config",
    "MANIFEST_NAME": "corpus",
    "DemoClip": "corpus",
    "DemoSummary": "corpus",
    "ensure_demo_corpus": "corpus",
    "generate_demo_corpus": "corpus",
    "is_generated": "corpus",
    "recording_names": "corpus",
    "synthesize_noise": "corpus",
    "synthesize_recording": "corpus",
    "write_recording": "corpus",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
