"""pytest settings for the nbval runs of the notebooks (``make test`` collects ``notebooks/*.ipynb``).

nbval re-executes each notebook and compares its outputs with the committed
ones, which ``make notebooks-refresh`` (``emolab.cli.notebooks.refresh_committed``)
produces in smoke mode. Kernels started by nbval inherit this process's
environment, so smoke mode is switched on here for them too.
"""

import os

os.environ["EMOLAB_SMOKE"] = "1"
