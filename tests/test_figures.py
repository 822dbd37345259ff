"""Figure regression tests: every figure of notebooks 01-06, rendered from fixed inputs, against a committed PNG.

nbval skips images, and the other viz tests check what a figure holds (axes, data, labels), not what it
looks like; a wrong colour map, a panel drawn empty, frames washed out or a layout that squeezes a map
to a strip would pass them. Here each :mod:`emolab.viz` function the notebooks call is drawn from the
closed-form inputs of ``tests/figure_cases.py`` (Agg, 40 dpi) and compared with ``tests/figures/<name>.png``:
same size, and a root-mean-square pixel difference (0-255) of at most :data:`TOLERANCE`.

After an intended change of a figure, look at the new images and rewrite the references with::

    EMOLAB_UPDATE_FIGURES=1 python -m pytest -q -p no:cacheprovider tests/test_figures.py

(the comparisons then pass by construction, and the run says which files it wrote). On a failure, the
rendered image and a difference image are written next to the test's tmp_path and named in the message.
"""

from __future__ import annotations

import functools
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tests.figure_cases import DPI, FIGURES, REFERENCE_DIR, pixels, render, rms_difference

#: Largest RMS pixel difference (0-255) that counts as the same figure: antialiasing of text and lines
#: may move by a level or two between builds of the same matplotlib; any drawn change is far above it
#: (``test_a_changed_figure_fails`` measures the smallest perturbation of each figure).
TOLERANCE = 2.0
UPDATE = os.environ.get("EMOLAB_UPDATE_FIGURES", "") not in ("", "0")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@functools.cache
def _rendered(name: str) -> bytes:
    """The PNG of figure ``name`` from its reference inputs (drawn once per session: two tests use it)."""
    return render(FIGURES[name][1]())


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_matches_reference(name, tmp_path):
    notebook = FIGURES[name][0]
    png = _rendered(name)
    ref = REFERENCE_DIR / f"{name}.png"
    if UPDATE:
        REFERENCE_DIR.mkdir(exist_ok=True)
        ref.write_bytes(png)
        print(f"wrote {ref}")
    assert ref.is_file(), (
        f"{ref} is missing (the reference of notebook {notebook}'s {name} figure): "
        "run EMOLAB_UPDATE_FIGURES=1 python -m pytest tests/test_figures.py and commit it"
    )
    got, want = pixels(png), pixels(ref)
    rms = rms_difference(got, want)
    if rms > TOLERANCE:
        actual = tmp_path / f"{name}-actual.png"
        actual.write_bytes(png)
        detail = f"size {got.shape[1]}x{got.shape[0]} px, reference {want.shape[1]}x{want.shape[0]} px"
        if got.shape == want.shape:
            diff = tmp_path / f"{name}-diff.png"
            plt.imsave(diff, np.abs(got - want).mean(-1), cmap="magma", vmin=0, vmax=255)
            detail = f"RMS pixel difference {rms:.2f} > {TOLERANCE}; difference image {diff}"
        pytest.fail(
            f"notebook {notebook}'s {name} figure differs from {ref.relative_to(REFERENCE_DIR.parent.parent)}: "
            f"{detail}; rendered image {actual}. If the change is intended, regenerate the references "
            "(EMOLAB_UPDATE_FIGURES=1, see this module's docstring)."
        )


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_changed_figure_fails(name):
    """The same figure from slightly different data (one count, a shifted attention peak, a darker frame row)
    is far outside the tolerance, so the comparison above can fail."""
    rms = rms_difference(pixels(_rendered(name)), pixels(render(FIGURES[name][2]())))
    assert rms > 2 * TOLERANCE, f"{name}: the perturbed figure is within {rms:.2f} RMS of the original"


def test_rendering_is_deterministic():
    """Two renders of one figure in one process are pixel-identical (nothing random, no state carried over)."""
    _, draw, _ = FIGURES["attention_over_media"]
    a, b = pixels(render(draw())), pixels(render(draw()))
    assert rms_difference(a, b) == 0.0


def test_every_notebook_has_reference_figures():
    """Notebooks 01-06 each have figures under test, and no reference lies unused."""
    assert sorted({nb for nb, _, _ in FIGURES.values()}) == ["01", "02", "03", "04", "05", "06"]
    assert DPI <= 60  # small renders keep the suite fast
    committed = {p.stem for p in REFERENCE_DIR.glob("*.png")}
    assert committed == set(FIGURES) or UPDATE, f"references without a figure: {sorted(committed - set(FIGURES))}"
