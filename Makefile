# archbench: `make run` sets up .venv and runs the default study; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench report clean

# The install profile: cuda where nvidia-smi lists a GPU, else cpu (override: make PROFILE=cpu ...).
# constraints/<profile>.txt pins torch (and on cuda the xformers built for it): the one place that
# states the pairing. Installed once; again when pyproject.toml or the profile's constraints change.
PROFILE     ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
CONSTRAINTS := constraints/$(PROFILE).txt

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m harness.sweep study=compare

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m harness.bench

report: $(STAMP)
	$(PY) -m harness.report

clean:
	rm -rf results/runs results/hydra results/*.png results/report.md results/runs.parquet results/runs.csv
