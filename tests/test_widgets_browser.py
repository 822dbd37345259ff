"""Notebook 02's widgets in a real browser (issue 5, item 5).

Starts JupyterLab on 127.0.0.1 (free port, random token, temporary root and
settings), opens a copy of ``02_augmentation_preview.ipynb`` pointed at a small
generated corpus in headless Chromium (Debian's ``chromium`` driven by
Playwright), runs all cells, checks that the widgets render (no "Error
displaying widget"), moves the brightness slider with the keyboard and checks
that the displayed image's bytes change. Skips with the reason when
``chromium`` or the ``playwright`` package is missing (``.ci/run`` installs
chromium where it can). The server, its kernels and the browser are always
shut down.

Both tests (notebook 02's widgets, notebook 04's figures) share one server and
one browser (the ``lab_browser`` fixture: starting them is most of a test's
time on 2 cores); each test opens its notebook in a page of its own and shuts
its kernels down when done, so neither sees the other's state.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a Jupyter server and a browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_augmentation_preview.ipynb"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SERVER_START_S = 90
RUN_ALL_S = 240
CHANGE_S = 60


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", timeout: float = 5.0):
    req = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


class _Lab:
    """A JupyterLab server in a temporary folder; ``stop()`` shuts down kernels and server."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
            "IPYTHONDIR": str(work / "ipython"),
        }
        self.log = open(work / "lab.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--ServerApp.terminals_enabled=False",
                "--LabApp.extension_manager=readonly",  # no PyPI queries
                *(["--ServerApp.allow_root=True"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            ],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                _api(self.base, self.token, "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                for k in _api(self.base, self.token, "/api/kernels") or []:
                    _api(self.base, self.token, f"/api/kernels/{k['id']}", "DELETE", timeout=15)
                _api(self.base, self.token, "/api/shutdown", "POST")
                self.proc.wait(timeout=20)
        except Exception:
            pass
        finally:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and what it started
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
            self.log.close()


def _notebook_copy(dest: Path, data_root: Path) -> Path:
    """The committed notebook, outputs cleared, with ``data_root`` set in its parameters cell."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "data_root = None" in params[0].source
    params[0].source = params[0].source.replace("data_root = None", f"data_root = {str(data_root)!r}", 1)
    for cell in nb.cells:  # start from a notebook without outputs, as a user would
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    out = dest / NOTEBOOK.name
    nbformat.write(nb, out)
    return out


def _image_digest(page) -> str | None:
    """SHA-256 of the bytes behind the panel's <img> (a blob: URL), or None before it has one."""
    data = page.evaluate(
        """async () => {
            const img = document.querySelector('.emolab-preview-image');
            if (!img || !img.src) return null;
            const buf = await (await fetch(img.src)).arrayBuffer();
            return Array.from(new Uint8Array(buf));
        }"""
    )
    return hashlib.sha256(bytes(data)).hexdigest() if data else None


def _screenshot_dir() -> Path | None:
    """``$EMOLAB_SCREENSHOT_DIR``: where to keep the screenshots the browser test takes (None: nowhere)."""
    d = os.environ.get("EMOLAB_SCREENSHOT_DIR")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d)


def _frame_boxes(demo_root: Path) -> tuple[list, list]:
    """Where the panel's "before" and "after" frames sit in its image, as fractions (x0, y0, x1, y1) of the
    image from the top left: the same panel built here (same clip and settings as the notebook's)."""
    import numpy as np

    from emolab.data import pair_corpus, resolve_noise_path
    from emolab.viz.widgets import AugmentationPreview, AugmentSettings, choose_clip, pick_clips

    pairs = pair_corpus(demo_root, check="none").pairs
    chosen = choose_clip(pairs)
    panel = AugmentationPreview(pick_clips(pairs, actors=[chosen.actor]), resolve_noise_path(demo_root),
                                AugmentSettings(seed=0), initial=chosen, num_frames=8)
    fig = panel.figure
    W, H = fig.bbox.width, fig.bbox.height
    boxes = []
    for ax in fig.axes:
        if ax.images and np.asarray(ax.images[0].get_array()).ndim == 3:
            x0, y0, x1, y1 = ax.get_window_extent().extents
            boxes.append((x0 / W, 1 - y1 / H, x1 / W, 1 - y0 / H))
    half = len(boxes) // 2
    return boxes[:half], boxes[half:]


def _crop(img, box, inner: float = 0.6):
    """The central ``inner`` part of a fractional box of an image array (H, W, C)."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    cx, cy, bw, bh = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h, (x1 - x0) * w * inner, (y1 - y0) * h * inner
    return img[int(cy - bh / 2): int(cy + bh / 2), int(cx - bw / 2): int(cx + bw / 2), :3].astype(float)


def _wait(predicate, timeout: float, what: str, page=None, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if page is not None:
            page.wait_for_timeout(int(poll * 1000))
        else:
            time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class _LabBrowser:
    """The shared JupyterLab server (``lab``, serving ``root``) and headless Chromium ``context``."""

    def __init__(self, lab: _Lab, context, root: Path) -> None:
        self.lab, self.context, self.root = lab, context, root

    def open(self, name: str):
        """A new page on notebook ``name`` (in ``root``), with a reset workspace: only that notebook open."""
        page = self.context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{self.lab.base}/lab/tree/{name}?token={self.lab.token}&reset")
        return page

    def close(self, page) -> None:
        """Closes ``page`` and shuts down the kernels it started: the next test starts from a quiet server."""
        page.close()
        for k in _api(self.lab.base, self.lab.token, "/api/kernels") or []:
            _api(self.lab.base, self.lab.token, f"/api/kernels/{k['id']}", "DELETE", timeout=15)


@pytest.fixture(scope="module")
def lab_browser(tmp_path_factory):
    """One JupyterLab server and one headless Chromium for the module's tests (skips without either); the
    tests copy their notebooks into ``root``. Always shut down, whatever the tests did."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium browser installed (Debian: apt-get install chromium; .ci/run does this as root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')"
    )
    work = tmp_path_factory.mktemp("lab")
    root = work / "served"
    root.mkdir()
    lab = _Lab(root, work)
    try:
        lab.wait_ready()
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(work / "profile"),
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                yield _LabBrowser(lab, context, root)
            finally:
                context.close()
    finally:
        lab.stop()


def test_augmentation_widgets_render_and_react_in_chromium(lab_browser, demo_root):
    _notebook_copy(lab_browser.root, demo_root)
    page = lab_browser.open(NOTEBOOK.name)
    try:
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=90_000)
        # The kernel must be up before "run all" (an idle status in the toolbar).
        _wait(
            lambda: page.evaluate(
                """() => {
                    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                    return !!k && k.status === 'idle';
                }"""
            ),
            90, "an idle kernel", page,
        )
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

        # The panel renders, the image gets its bytes, and the last cell ran.
        page.wait_for_selector(".emolab-augmentation-preview", timeout=RUN_ALL_S * 1000)
        before = _wait(lambda: _image_digest(page), CHANGE_S, "the preview image", page)
        _wait(
            lambda: page.evaluate(
                """() => {
                    const w = window.jupyterapp.shell.currentWidget;
                    const cells = w.content.widgets;
                    const last = cells[cells.length - 1];
                    return last.model.executionCount !== null && w.sessionContext.session.kernel.status === 'idle';
                }"""
            ),
            RUN_ALL_S, "all cells to run", page,
        )
        # text_content, not inner_text: JupyterLab skips rendering cells off screen.
        text = page.text_content(".jp-NotebookPanel") or ""
        assert "Error displaying widget" not in text
        assert "Traceback" not in text, text[-3000:]
        assert page.locator(".emolab-augmentation-preview .widget-slider").count() >= 2
        assert page.locator(".emolab-augmentation-preview audio").count() == 2

        # What the reader sees, by screenshot pixels: with every augmentation off the "after" row
        # shows the "before" row's frames (not washed out towards grey).
        import io

        import numpy as np
        from PIL import Image

        image = page.locator(".emolab-preview-image")
        image.scroll_into_view_if_needed()
        shot = np.asarray(Image.open(io.BytesIO(image.screenshot())).convert("RGB"))
        if _screenshot_dir() is not None:
            page.screenshot(path=str(_screenshot_dir() / "02_preview_panel.png"), full_page=False)
            Image.fromarray(shot).save(_screenshot_dir() / "02_preview_image.png")
        before_boxes, after_boxes = _frame_boxes(demo_root)
        assert len(before_boxes) == len(after_boxes) == 8
        for b_box, a_box in zip(before_boxes, after_boxes):
            b, a = _crop(shot, b_box), _crop(shot, a_box)
            assert b.shape == a.shape and b.size > 0
            assert b.std() > 10  # a frame, not the background
            assert np.abs(a - b).mean() < 4.0, np.abs(a - b).mean()
            assert a.std() == pytest.approx(b.std(), rel=0.1)

        # Move the "darken by" slider: focus its handle, arrow keys (0.05 per step).
        slider = page.locator(".emolab-augmentation-preview .widget-slider", has_text="darken by")
        slider.scroll_into_view_if_needed()
        readout = slider.locator(".widget-readout")
        assert (readout.text_content() or "").strip() == "0.00"
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(8):
            page.keyboard.press("ArrowRight")
        try:
            _wait(lambda: (readout.text_content() or "").strip() != "0.00", 10, "the slider to move", page)
        except TimeoutError:  # pragma: no cover - no keyboard support: drag the handle
            pass
        if (readout.text_content() or "").strip() == "0.00":  # pragma: no cover - keyboard unsupported: drag
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + 150, box["y"] + box["height"] / 2, steps=10)
            page.mouse.up()
        moved = (readout.text_content() or "").strip()
        assert float(moved) > 0, moved
        after = _wait(
            lambda: (d := _image_digest(page)) and d != before and d, CHANGE_S, "the image to change", page
        )
        assert after != before
        assert "Error displaying widget" not in (page.text_content(".jp-NotebookPanel") or "")
    finally:
        lab_browser.close(page)


def test_attention_notebook_figures_display_in_chromium(lab_browser):
    """The committed notebook 04 as a reader opens it: its figures show (screenshots kept with
    ``EMOLAB_SCREENSHOT_DIR``), the attention figure is drawn, and nothing failed to display."""
    import io

    import numpy as np
    from PIL import Image

    name = "04_attention_maps.ipynb"
    shutil.copy(ROOT / "notebooks" / name, lab_browser.root / name)
    page = lab_browser.open(name)
    try:
        page.wait_for_selector(".jp-NotebookPanel .jp-OutputArea-output img", timeout=90_000)
        images = page.locator(".jp-NotebookPanel .jp-OutputArea-output img")
        # JupyterLab renders outputs as they scroll into its window: wait for the third, then count
        images.nth(2).wait_for(state="attached", timeout=90_000)
        assert images.count() >= 3  # two clips' attention figures and the per-head maps
        shots = []
        for i in range(images.count()):
            img = images.nth(i)
            img.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            shot = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("RGB"))
            shots.append(shot)
            if _screenshot_dir() is not None:
                Image.fromarray(shot).save(_screenshot_dir() / f"04_figure_{i}.png")
        assert all(s.std() > 10 for s in shots)  # drawn figures, not blank boxes
        assert "Error displaying" not in (page.text_content(".jp-NotebookPanel") or "")
    finally:
        lab_browser.close(page)
