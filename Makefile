# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv with the first Python >= 3.11 it finds and installs what it needs.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "geofence needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Each target installs only what it needs: the demo its server, the tests their toolchain.
# The native extension (geofence/native/_core.c) is compiled by the install (hatch_build.py): a change to it
# reinstalls. Without a C compiler the install still succeeds, on the pure-Python path.
NATIVE := geofence/native/_core.c hatch_build.py

$(VENV)/.demo: $(BIN)/python pyproject.toml $(NATIVE)
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	@touch $@

$(VENV)/.test: $(BIN)/python pyproject.toml $(NATIVE)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

demo: $(VENV)/.demo
	$(BIN)/geofence lookup 8.8.8.8 2a00:1450:4001:81b::200e 5.255.255.5 ::ffff:81.2.69.142 10.1.2.3
	@echo
	$(BIN)/geofence demo --tour
	@echo
	@echo "geofence is installed in $(VENV): run it as $(BIN)/geofence, or put it on PATH with: source $(BIN)/activate"

test: $(VENV)/.test
	$(BIN)/ruff check geofence tests benchmarks
	$(BIN)/ruff format --check geofence tests benchmarks
	$(BIN)/mypy geofence
	$(BIN)/python -m pytest
	@echo "the suite again on the pure-Python reference path (GEOFENCE_NATIVE=0), end-to-end tests aside:"
	GEOFENCE_NATIVE=0 $(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/e2e

# `make bench`: the suite (benchmarks/README.md), then README.md's bench block from its results;
# `make bench QUICK=1`: the quick run (~1.5 min), which leaves README.md alone.
$(VENV)/.bench: $(VENV)/.test pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	@touch $@

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/suite.py $(if $(QUICK),--quick)
	$(if $(QUICK),,$(BIN)/python benchmarks/readme.py)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
