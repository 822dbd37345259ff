"""emolab.viz: the plots of the notebooks, as functions of data that return Figures.

Every function takes arrays, tensors, dicts or lists (never file paths) and
returns a :class:`matplotlib.figure.Figure` (a subclass with a PNG repr).
Figures are not registered with pyplot: a notebook cell that ends with the
call (or ``display(fig)``) shows the figure once, ``fig.savefig(...)`` writes
it, and nothing accumulates in pyplot. Nothing here changes global
matplotlib state (rcParams, backend, styles). Time axes are in seconds
throughout, so frame strips, spectrograms and attention maps line up.

* corpus (notebook 01): :func:`pairs_heatmap`, :func:`balance_plot`, :func:`split_composition`
* media (notebook 02): :func:`frame_strip`, :func:`log_mel_image`, :func:`augmentation_panel`
* training (notebook 03): :func:`learning_curves`, :func:`confusion_matrix_plot`
* attention (notebook 04): :func:`attention_maps`, :func:`attention_over_media`, with time axes
  from :func:`video_frame_times` and :func:`audio_step_times`
* gates (notebook 05): :func:`gate_histograms`, :func:`gate_by_snr`, :func:`gate_stats`
* robustness (notebook 06, ``emolab robustness``): :func:`robustness_curves`
"""

from emolab.viz.attention import attention_maps, attention_over_media, audio_step_times, video_frame_times
from emolab.viz.corpus import balance_plot, pairs_heatmap, split_composition
from emolab.viz.gates import gate_by_snr, gate_histograms, gate_stats, snr_order
from emolab.viz.media import as_display_frames, as_mel_image, augmentation_panel, frame_strip, log_mel_image
from emolab.viz.robustness import robustness_curves
from emolab.viz.training import confusion_matrix_plot, history_records, learning_curves

__all__ = [
    "as_display_frames",
    "as_mel_image",
    "attention_maps",
    "attention_over_media",
    "audio_step_times",
    "augmentation_panel",
    "balance_plot",
    "confusion_matrix_plot",
    "frame_strip",
    "gate_by_snr",
    "gate_histograms",
    "gate_stats",
    "history_records",
    "learning_curves",
    "log_mel_image",
    "pairs_heatmap",
    "robustness_curves",
    "snr_order",
    "split_composition",
    "video_frame_times",
]
