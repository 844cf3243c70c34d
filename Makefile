# archbench: `make run` sets up .venv and runs the default study; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test bench report clean

# Installed once; again only when pyproject.toml changes. torch is pinned to 2.13.0: where pip's
# find-links hold the CPU wheel (as on these machines) that is what installs, elsewhere PyPI's build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
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
