"""pytest settings for the nbval runs of the notebooks (``make test`` collects ``notebooks/*.ipynb``).

nbval re-executes each notebook and compares its outputs with the committed
ones, which ``make notebooks-refresh`` (``emolab.cli.notebooks.refresh_committed``)
produces in smoke mode. Kernels started by nbval inherit this process's
environment, so smoke mode is switched on here for them too.
"""

import os

import pytest

os.environ["EMOLAB_SMOKE"] = "1"


def pytest_collection_modifyitems(items):
    """Mark every notebook cell nbval collects ``slow``: each notebook is a whole run (a training, an
    evaluation), so ``make test-fast`` (``-m "not slow"``) leaves them to ``make test``."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
