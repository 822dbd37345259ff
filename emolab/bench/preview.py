"""Notebook 02's augmentation preview: seconds per re-render of a cached clip.

One render is what a released slider costs: featurise the cached raw item with the
settings' draw (blur, darkening, pixel noise, noise mixing, two log-Mels), draw the before/after
figure and encode it as PNG, encode the two WAV players. The clip is decoded once
before timing (the panel caches it), as after the first render in the notebook.

    python benchmarks/bench_preview.py              # demo corpus (data/demo, generated when absent)
    python benchmarks/bench_preview.py --data DIR   # another corpus
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from emolab.bench.common import machine, results_dir
from emolab.data import pair_corpus
from emolab.data.datasets import resolve_noise_path
from emolab.utils.fileio import atomic_write_json
from emolab.eval.notebook import resolve_data_root
from emolab.viz.widgets import AugmentationPreview, choose_clip, pick_clips


SETTINGS = {
    "no augmentation": {},
    "darken 0.4": {"brightness": 0.4},
    "blur 7": {"blur_kernel": 7},
    "pixel noise 0.05": {"noise_scale": 0.05},
    "audio 5 dB (file)": {"snr_db": 5.0},
    "all of them": {"brightness": 0.4, "blur_kernel": 7, "noise_scale": 0.05, "snr_db": 5.0},
}
OFF = {"brightness": 0.0, "blur_kernel": 1, "noise_scale": 0.0, "snr_db": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="corpus folder (default: the demo corpus)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    root = resolve_data_root(args.data)
    pairs = pair_corpus(root, check="none").pairs
    clip = choose_clip(pairs)
    t0 = time.perf_counter()
    panel = AugmentationPreview(pick_clips(pairs), resolve_noise_path(root), initial=clip)
    first = time.perf_counter() - t0
    rows = {}
    for name, values in SETTINGS.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            panel.set(**{**OFF, **values})
            times.append(time.perf_counter() - t0)
        rows[name] = {"median_s": statistics.median(times), "max_s": max(times)}
    load = os.getloadavg()[0]
    print(f"preview of {clip.stem} ({root.name}), {args.repeats} renders each; first render (decode) {first:.2f} s; "
          f"load average {load:.1f}")
    print(f"{'settings':<20} {'median s':>9} {'max s':>7}")
    for name, r in rows.items():
        print(f"{name:<20} {r['median_s']:>9.3f} {r['max_s']:>7.3f}")
    out = results_dir() / "preview.json"
    atomic_write_json({"machine": machine(), "clip": clip.stem, "corpus": str(root.name),
                       "repeats": args.repeats, "load_average_1min": load, "first_render_s": first, "renders": rows}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
