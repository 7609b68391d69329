# Two entry points for a fresh machine: `make run` (sample corpus) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test lint dvc-yaml

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c requirements.lock -e ".[dev,dask,bench,export]"
	touch $@

run: setup
	$(VENV)/bin/embedpipe run
	$(VENV)/bin/embedpipe search "how do neutron stars form" -k 3

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

dvc-yaml: setup
	$(VENV)/bin/embedpipe dvc-yaml
