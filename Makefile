# Two commands do everything (see README): `make report` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PARAMS ?= params/cpu.yaml
# Quarto installed into the repository (../shared/quarto/install.sh .quarto) is used like one on PATH.
export PATH := $(CURDIR)/.quarto/bin:$(PATH)

.PHONY: install test test-fast report run clean-runs

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Library tests, a Papermill smoke run of every notebook on params/smoke.yaml, the report checks
# (its book rendered by Quarto when quarto is on PATH; skipped with the reason otherwise).
test: install
	$(BIN)/python -m pytest

# The library tests alone: no test marked `notebooks` (the Papermill smoke runs, the GPU-preset dry
# runs of the notebooks, the real accelerate/torchrun launches, the smoke run's report book).
test-fast: install
	$(BIN)/python -m pytest -m "not notebooks"

# Every notebook that exists, in order, on the default preset; then the report (the Quarto book and
# PDF when quarto is on PATH, plain nbconvert pages otherwise).
report: install
	$(BIN)/python -m steiner_lib run --params $(PARAMS)
	$(BIN)/python -m steiner_lib report --params $(PARAMS)

run: install
	$(BIN)/python -m steiner_lib run --params $(PARAMS)

clean-runs:
	rm -rf runs figures/*/ report/notebooks report/_build
