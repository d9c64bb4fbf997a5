# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test lint install

$(VENV)/.base: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.base

# The main job on embedded, generated data: C2D vs C2D + non-local, export, reload, attention PNG.
demo: $(VENV)/.base
	KERAS_BACKEND=tensorflow $(PY) -m zoo.demo --output_dir=demo_output

lint: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Backend-neutral tests (marked all_backends) run on JAX and PyTorch too;
# the whole suite, TensorFlow-only parts included, runs on TensorFlow. JAX and
# TensorFlow run in TEST_WORKERS pytest processes (pytest-xdist): much of their
# time is single-threaded (tracing, compiling, starting the CLIs under test);
# on 2 cores the TensorFlow pass took 14.8 instead of 27.0 minutes.
TEST_WORKERS ?= 2
test: lint
	KERAS_BACKEND=jax $(PY) -m pytest -q -n $(TEST_WORKERS) -m all_backends
	KERAS_BACKEND=torch $(PY) -m pytest -q -m all_backends
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -n $(TEST_WORKERS)
