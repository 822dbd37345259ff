"""The interactive augmentation preview of notebook 02: an ipywidgets panel (:class:`AugmentationPreview`).

Controls: clip chooser, face-crop toggle, blur kernel (off/3/5/7), brightness attenuation (0-0.6,
training draws 0.2-0.6), video noise scale, audio SNR (clean, 20 ... 0 dB) and noise source (noise file
or Gaussian). Outputs: frames and log-Mel before/after (one PNG in an ``ipywidgets.Image``), clean and
noisy audio players (``ipywidgets.Audio``) and a one-line summary. Every change of a control re-renders
from a fixed seed, so equal settings give equal images. What it draws comes from
:mod:`emolab.viz.augmentation` (re-exported here with the static galleries, for the notebook's import).

The panel holds no output widget: images and audio are widget values, so
executed notebooks carry no captured outputs, and re-running a notebook under
nbval compares only the panel's one-line text.

Typical use::

    clips = pick_clips(pairs)                       # one clip per emotion
    panel = AugmentationPreview(clips, noise_path)   # displays itself
    panel.set(brightness=0.4)                        # what a slider does
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from emolab.data.ravdess import PairRecord
from emolab.viz import augmentation
from emolab.viz.augmentation import (  # noqa: F401  (re-exported: notebook 02 imports them all from here)
    SNR_LEVELS,
    AugmentedClip,
    AugmentSettings,
    ClipMedia,
    audio_players,
    augment_clip,
    choose_clip,
    clip_label,
    format_db,
    noise_gallery,
    peak_of,
    pick_clips,
    preview_figure,
    redraw_preview,
    render_png,
    video_gallery,
    wav_bytes,
)

__all__ = ["AugmentationPreview", *augmentation.__all__]


class AugmentationPreview:
    """Interactive preview of every training augmentation on a chosen clip (ipywidgets).

    Displaying the object (a notebook cell ending with it) shows the panel.
    ``controls`` maps names (``clip``, ``face_crop``, ``blur_kernel``,
    ``brightness``, ``noise_scale``, ``snr_db``, ``noise_source``) to widgets;
    ``image``, ``clean_audio``, ``noisy_audio`` and ``summary`` are the outputs.
    Changing a control's ``value`` re-renders them (:meth:`update`).

    Args:
        clips: the clips to choose from (e.g. :func:`pick_clips`).
        initial: the clip shown first (added to ``clips`` if missing); the first clip when None.
        noise_path: the noise file (``<data_root>/Noise/noise.wav``); without it the
            noise source is fixed to Gaussian.
        settings: initial settings.
        num_frames, size: frames sampled per clip and their side in pixels.
        dpi: resolution of the rendered figure.
        debounce_s: a control's change waits this long for the next change before the panel
            re-renders (one render for a run of arrow-key steps); 0 renders on every change.
            Sliders also report only on release. :meth:`set` always renders at once.
    """

    def __init__(
        self,
        clips: Sequence[PairRecord],
        noise_path: str | Path | None = None,
        settings: AugmentSettings | None = None,
        *,
        initial: PairRecord | None = None,
        num_frames: int = 8,
        size: int = 112,
        dpi: int = 72,
        debounce_s: float = 0.25,
    ) -> None:
        import ipywidgets as W

        if not clips:
            raise ValueError("AugmentationPreview needs at least one clip")
        self.clips = list(clips)
        if initial is not None and initial not in self.clips:
            self.clips.insert(0, initial)
        start = self.clips.index(initial) if initial is not None else 0
        self.dpi = dpi
        self.debounce_s = debounce_s
        self._pending: Any = None  # the scheduled render of a debounced change
        self._quiet = False  # set() changes several controls, then renders once
        self.media = ClipMedia(noise_path, num_frames, size)
        s = settings or AugmentSettings()
        if self.media.noise_path is None:
            s = replace(s, noise_source="gaussian")
        self.renders = 0
        self.figure: Figure | None = None  # the figure the image shows (redrawn in place)
        style = {"description_width": "110px"}
        layout = W.Layout(width="420px")
        self.controls: dict[str, Any] = {
            "clip": W.Dropdown(
                options=[(clip_label(p), i) for i, p in enumerate(self.clips)],
                value=start, description="clip", style=style, layout=W.Layout(width="520px"),
            ),
            "face_crop": W.Checkbox(value=s.face_crop, description="face crop", indent=False),
            "blur_kernel": W.ToggleButtons(
                options=[("off", 1), ("3", 3), ("5", 5), ("7", 7)], value=s.blur_kernel,
                description="blur kernel", style={**style, "button_width": "50px"},
            ),
            "brightness": W.FloatSlider(
                value=s.brightness, min=0.0, max=0.6, step=0.05, readout_format=".2f",
                description="darken by", style=style, layout=layout, continuous_update=False,
            ),
            "noise_scale": W.FloatSlider(
                value=s.noise_scale, min=0.0, max=0.1, step=0.005, readout_format=".3f",
                description="pixel noise std", style=style, layout=layout, continuous_update=False,
            ),
            "snr_db": W.SelectionSlider(
                options=[("clean", "clean") if v is None else (f"{v:g} dB", v) for v in SNR_LEVELS],
                value="clean" if s.snr_db is None else s.snr_db, description="audio SNR", style=style,
                layout=layout, continuous_update=False,
            ),
            "noise_source": W.ToggleButtons(
                options=[("noise file", "file"), ("Gaussian", "gaussian")], value=s.noise_source,
                description="noise source", style={**style, "button_width": "90px"},
                disabled=self.media.noise_path is None,
            ),
        }
        self.seed = s.seed
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.clean_audio = W.Audio(format="wav", autoplay=False, loop=False)
        self.noisy_audio = W.Audio(format="wav", autoplay=False, loop=False)
        self.summary = W.HTML()
        players = W.HBox([
            W.VBox([W.HTML("<b>clean</b>"), self.clean_audio]),
            W.VBox([W.HTML("<b>noisy</b>"), self.noisy_audio]),
        ])
        c = self.controls
        self.widget = W.VBox(
            [
                c["clip"],
                W.HBox([c["face_crop"], c["blur_kernel"]]),
                W.HBox([c["brightness"], c["noise_scale"]]),
                W.HBox([c["snr_db"], c["noise_source"]]),
                self.summary,
                self.image,
                players,
            ],
            layout=W.Layout(border="1px solid #ddd", padding="6px"),
        )
        self.widget.add_class("emolab-augmentation-preview")
        self.image.add_class("emolab-preview-image")
        for w in c.values():
            w.observe(self._on_change, names="value")
        self.update()

    @property
    def settings(self) -> AugmentSettings:
        """The settings the controls show now."""
        c = self.controls
        return AugmentSettings(
            face_crop=bool(c["face_crop"].value),
            blur_kernel=int(c["blur_kernel"].value),
            brightness=float(c["brightness"].value),
            noise_scale=float(c["noise_scale"].value),
            snr_db=None if c["snr_db"].value == "clean" else float(c["snr_db"].value),
            noise_source=str(c["noise_source"].value),
            seed=self.seed,
        )

    @property
    def pair(self) -> PairRecord:
        """The chosen clip."""
        return self.clips[int(self.controls["clip"].value)]

    def set(self, **values: Any) -> None:
        """Set controls by name, as a user would (each change re-renders)."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise KeyError(f"unknown controls {sorted(unknown)}; known: {sorted(self.controls)}")
        self._quiet = True
        try:
            for name, v in values.items():
                self.controls[name].value = "clean" if name == "snr_db" and v is None else v
        finally:
            self._quiet = False
        self._cancel_pending()
        self.update()

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._quiet:
            return
        self._cancel_pending()
        try:
            loop = asyncio.get_running_loop()  # the kernel's loop, while it handles a widget message
        except RuntimeError:
            loop = None
        if loop is None or self.debounce_s <= 0:
            self.update()
        else:
            self._pending = loop.call_later(self.debounce_s, self._render_pending)

    def _render_pending(self) -> None:
        self._pending = None
        self.update()

    def update(self) -> AugmentedClip:
        """Re-render the figure, the players and the summary from the controls."""
        s = self.settings
        out = augment_clip(self.pair, s, media=self.media)
        if self.figure is None or not redraw_preview(self.figure, self.pair, out, s):
            self.figure = preview_figure(self.pair, out, s)
            render_png(self.figure, self.dpi)  # lays it out once
            self.figure.set_layout_engine("none")  # later renders keep that layout: one draw each
        self.image.value = render_png(self.figure, self.dpi, tight=False)
        peak = peak_of(out.wave, out.noisy)
        self.clean_audio.value = wav_bytes(out.wave, peak=peak)
        self.noisy_audio.value = wav_bytes(out.noisy, peak=peak)
        snr = "clean" if out.snr is None else f"measured SNR {format_db(out.snr)}"
        self.summary.value = (
            f"<code>{self.pair.stem}</code>: face {out.clip.face}, frames {tuple(out.frames.shape)}, "
            f"log-Mel {tuple(out.noisy_mel.shape)}, {snr}"
        )
        self.renders += 1
        self.last = out
        return out

    def __repr__(self) -> str:
        return (
            f"AugmentationPreview({len(self.clips)} clips; controls: {', '.join(self.controls)})"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        # The VBox's widget view, with a short stable text (nbval compares text/plain).
        bundle = dict(self.widget._repr_mimebundle_(**kwargs))
        bundle["text/plain"] = repr(self)
        return bundle


