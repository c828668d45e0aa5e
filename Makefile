# DAST bundles: `make demo` runs the whole pipeline on synthetic data, `make test` runs the test suite.
# Both create the virtual environment .venv first (CPU PyTorch pinned for reproducible tests; see README).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= demo_output
BIN := $(VENV)/bin
LOWEST_VENV := .venv-lowest
# one intra-op thread per process: the test suite starts several processes (torchrun, bundle subprocesses) on small
# machines, where oversubscribed torch threads ran up to 10x slower
TEST_ENV := OMP_NUM_THREADS=1
PY := $(BIN)/python

.PHONY: venv demo test test-fast test-slow test-monailabel test-standalone test-lowest verify clean

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
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow" -p no:cacheprovider --ignore=tests/monailabel --ignore=tests/standalone
	$(TEST_ENV) $(PY) -m pytest -q -m slow -p no:cacheprovider --ignore=tests/monailabel --ignore=tests/standalone

# MONAI Label 0.8.5 pins numpy<2 and jsonschema<4: it gets its own environment, .venv-monailabel
test-monailabel: venv
	bash tests/monailabel/make_env.sh
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/monailabel

# each release zip downloaded into an empty folder and run in a fresh environment holding only what its metadata lists
# (.venv-bundle-kits19_seg, .venv-bundle-search; rebuilt only when the metadata changes)
test-standalone: venv
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/standalone

# the fast suite with the lowest versions setup.cfg allows: MONAI 1.4.0 and numpy 1.x, in .venv-lowest
LOWEST := monai==1.4.0 "numpy<2"
$(LOWEST_VENV)/.installed: setup.cfg pyproject.toml
	rm -rf .venv-lowest && $(PYTHON) -m venv .venv-lowest
	.venv-lowest/bin/python -m pip install --quiet --upgrade pip
	.venv-lowest/bin/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	.venv-lowest/bin/python -m pip install --quiet -e ".[test]" "torch==$(TORCH_VERSION)" $(LOWEST)
	touch $@

test-lowest: $(LOWEST_VENV)/.installed
	.venv-lowest/bin/python -c "import monai, numpy; print('monai', monai.__version__, 'numpy', numpy.__version__)"
	$(TEST_ENV) .venv-lowest/bin/python -m pytest -q -m "not slow" -p no:cacheprovider --ignore=tests/monailabel --ignore=tests/standalone

# Model Zoo bundle checks (files, metadata schema, changelog, MONAI Label rules, net in/out, TorchScript)
verify: venv
	$(PY) -m dast_components.verify bundles/dast_search --overlay bundles/dast_search/configs/quick.json
	$(PY) -m dast_components.verify bundles/dast_kits19_seg --overlay bundles/dast_kits19_seg/configs/quick.json

test-fast: venv
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow" --ignore=tests/monailabel --ignore=tests/standalone

test-slow: venv
	$(TEST_ENV) $(PY) -m pytest -q -m slow --ignore=tests/monailabel --ignore=tests/standalone

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .venv-bundle-* $(DEMO_DIR) build *.egg-info
