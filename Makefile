# adacorr: `make demo` runs the AdA quickstart on real Fashion-MNIST; `make test` runs the tests.
# Both create a local virtual environment (.venv) and install everything they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/fashion_mnist_ada
# Keep TensorFlow (used only by tfds) quiet and off any GPU.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test venv data clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Real Fashion-MNIST offline: Debian's dataset-fashion-mnist (else tfds downloads it).
data:
	@bash scripts/get_fashion_mnist.sh

# The AdA quickstart: pretrains (or reuses) a tiny EDSR corruption net, AdA-trains a small
# classifier, then writes its robustness report (generated Fashion-MNIST-C, 2000 test
# images) to $(WORKDIR)/report.
demo: venv data
	$(PY) -m experiments.cifar10_ada --config=experiments/configs/fashion_mnist_ada.py --workdir=$(WORKDIR)
	$(PY) -m experiments.evaluate --workdir=$(WORKDIR) --num_examples=2000 --lp_num_examples=200

# PyTorch (CPU) only for the weight-converter tests; they skip if it cannot be installed.
$(VENV)/.torch: $(VENV)/.installed
	-$(PY) -m pip install -q torch==2.13.0 && touch $@

test: venv $(VENV)/.torch data
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) runs
