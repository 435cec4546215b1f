# Two commands on a fresh machine:  `make train`  (installs into .venv, then runs python train.py)
#                                   `make test`   (installs into .venv, then runs the test suite)
# ARGS passes Hydra overrides: make train ARGS="paradigm=single search=iid"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel of torch by default (a local wheel on this kind of machine). GPU users: install your own torch
# into the venv first (or set TORCH_SPEC to your build); an importable torch is never replaced.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train evaluate test test-all clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@# PyPI's torchvision/torchaudio/torchcodec do not import beside the CPU torch wheel and break transformers
	-$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null
	touch $@

install: $(VENV)/.installed

train: install
	$(PY) train.py $(ARGS)

evaluate: install
	$(PY) evaluate.py $(ARGS)

# pytest exit code 5 ("no tests collected") is not a failure of the code under test.
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test-all: install
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache outputs multirun
