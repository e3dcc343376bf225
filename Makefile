# adacorr: `make demo` compares nominal training and AdA on real Fashion-MNIST; `make test`
# runs the tests.
# Both create a local virtual environment (.venv) and install everything they need.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
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

# The demo: trains a SmallCNN nominally and with AdA(EDSR) (same steps, batch and seed; the
# tiny EDSR is pretrained on first use), evaluates both (clean, generated Fashion-MNIST-C,
# l_inf) and prints one side-by-side table, plus the AdA paper's Figure 2 for the run
# ($(WORKDIR)/comparison.md, ada_ssim.png). A second call reuses finished runs and reports.
demo: venv data
	$(PY) -m experiments.demo --workdir=$(WORKDIR)

# PyTorch (CPU) only for the weight-converter tests, and the authors' AutoAttack
# (pyautoattack, which declares no dependencies: it needs only torch and numpy) for the
# AutoAttack parity test; the PAT authors' perceptual-advex and Zhang et al.'s lpips (its
# learned linear weights ship in the wheel) for the perceptual parity test, without their
# declared dependencies (torchvision, robustness, advex-uar, ...: the test stubs the
# imports it does not use). Those tests skip if these cannot be installed.
$(VENV)/.torch: $(VENV)/.installed
	-$(PY) -m pip install -q torch==2.13.0 && $(PY) -m pip install -q --no-deps pyautoattack==0.2.0 perceptual-advex==0.2.6 lpips==0.1.4 && touch $@

test: venv $(VENV)/.torch data
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf $(VENV) runs
