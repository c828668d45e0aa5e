# DAST bundles: `make demo` runs the whole pipeline on synthetic data, `make test` runs the test suite.
# Both create the virtual environment .venv first (CPU PyTorch pinned for reproducible tests; see README).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_output
BIN := $(VENV)/bin
# one intra-op thread per process: the test suite starts several processes (torchrun, bundle subprocesses) on small
# machines, where oversubscribed torch threads ran up to 10x slower
TEST_ENV := OMP_NUM_THREADS=1
PY := $(BIN)/python

.PHONY: venv demo test test-fast test-slow test-monailabel verify clean

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

# unit tests first (fast), then the slow end-to-end runs of the bundles
test: venv
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow" -p no:cacheprovider --ignore=tests/monailabel
	$(TEST_ENV) $(PY) -m pytest -q -m slow -p no:cacheprovider --ignore=tests/monailabel

# MONAI Label 0.8.5 pins numpy<2 and jsonschema<4: it gets its own environment, .venv-monailabel
test-monailabel: venv
	bash tests/monailabel/make_env.sh
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/monailabel

# Model Zoo bundle checks (files, metadata schema, changelog, MONAI Label rules, net in/out, TorchScript)
verify: venv
	$(PY) -m dast_components.verify bundles/dast_search --overlay bundles/dast_search/configs/quick.json
	$(PY) -m dast_components.verify bundles/dast_kits19_seg --overlay bundles/dast_kits19_seg/configs/quick.json

test-fast: venv
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow" --ignore=tests/monailabel

test-slow: venv
	$(TEST_ENV) $(PY) -m pytest -q -m slow --ignore=tests/monailabel

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
