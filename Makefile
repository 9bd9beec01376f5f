# make smoke   set up, then run the whole smoke workflow on the CPU (results/smoke/)
# make test    set up, then run every test
# Set-up is a venv in .venv with the exact versions of requirements.lock (torch from this
# machine's disk where present) and the package installed in editable mode.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install smoke test lint dry-run clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

smoke: install
	snakemake --cores 1 --configfile config/smoke.yaml

test: install
	python -m pytest

lint: install
	snakemake --lint --configfile config/smoke.yaml

dry-run: install
	snakemake -n --configfile config/smoke.yaml

clean:
	rm -rf results/smoke .snakemake
