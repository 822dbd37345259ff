# emolab: `make demo` runs the kit end to end, `make test` runs the test suite, `make test-fast` all of it
# but the whole-run tests (marked slow: training runs, notebooks, export, browser, cv/search, demo).
# Both create .venv (if missing) and install emolab with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emolab-installed
DATA_ROOT ?=
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean-cache notebooks-refresh

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m emolab demo $(if $(DATA_ROOT),--data_root "$(DATA_ROOT)")

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Re-execute the committed notebooks in place (smoke mode, demo corpus) and clean their metadata;
# `make test` then compares fresh runs against them with nbval. NOTEBOOKS=01 limits it to some.
notebooks-refresh: $(STAMP)
	$(PY) -m emolab notebooks refresh $(NOTEBOOKS)

clean-cache:
	rm -rf $${EMOLAB_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/emolab}
