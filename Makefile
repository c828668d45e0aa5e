# DAST bundles: `make demo` runs the whole pipeline on synthetic data, `make test` runs the test suite.
# Both create the virtual environment .venv first (CPU PyTorch pinned for reproducible tests; see README).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_output
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: venv demo test test-fast test-slow clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# the stamp is rebuilt when the package requirements change
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/activate
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[test]" "torch==$(TORCH_VERSION)"
	touch $@

venv: $(VENV)/.installed

demo: venv
	DEMO_DIR=$(DEMO_DIR) PY=$(PY) bash demo.sh

test: venv
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider
	$(PY) -m pytest -q -m slow -p no:cacheprovider

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

test-slow: venv
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
