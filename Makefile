# Two set-up commands: `make demo` and `make test`. Both create .venv on first use and are
# quick on a second run (installs are redone only when pyproject.toml changes).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU wheel that this project's machines carry; users with their own torch keep it.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: keep a torch that is already installed, else try the local CPU wheel,
# else let pip resolve `torch>=2.2` from pyproject.toml.
$(VENV)/.stamp-torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)" || echo "note: $(TORCH_SPEC) not available; pip will pick a torch>=2.2 build"
	touch $@

$(VENV)/.stamp-install: pyproject.toml $(VENV)/.stamp-torch
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-install
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.stamp-install
	$(VENV)/bin/trilemma space list --nodes 3 --format table --width 64 --in-features 64
	$(VENV)/bin/trilemma run examples/nfl_digits.toml
	$(VENV)/bin/trilemma report examples/nfl_digits.toml

# The report's browser test drives Debian's chromium; install it when we can (root + apt),
# otherwise that test skips with a reason.
$(VENV)/.stamp-chromium: | $(PY)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "note: could not install chromium; the browser test will skip"; \
	else echo "note: chromium not found and not root; the browser test will skip"; fi
	touch $@

# Lint and type-check first (seconds), then the whole suite.
test: $(VENV)/.stamp-dev $(VENV)/.stamp-chromium
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: $(VENV)/.stamp-dev
	$(PY) benchmarks/ntk.py

clean:
	rm -rf $(VENV) runs .pytest_cache
