# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv with the first Python >= 3.11 it finds and installs what it needs.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11 python; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/geofence: pyproject.toml
	@test -n "$(PYTHON)" || { echo "geofence needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

demo: $(BIN)/geofence
	$(BIN)/geofence db info
	@echo
	$(BIN)/geofence lookup 8.8.8.8 1.1.1.1 2a00:1450:4001:81b::200e 5.255.255.5 ::ffff:81.2.69.142 10.1.2.3 100.64.0.1 fe80::1%eth0
	@echo
	$(BIN)/geofence policy validate data/example-policy.toml
	@echo
	-$(BIN)/geofence check --ip 8.8.8.8 --method POST --path /v1/messages --body '{"model": "mythos-5"}'
	@echo
	-$(BIN)/geofence check --ip 8.8.8.8 --method POST --path /v1/messages --body '{"model": "mythos-5"}' --claims '{"us_person": true}'
	@echo
	-$(BIN)/geofence check --ip 8.8.8.8 --method POST --path /v1/messages --body '{"model": "mythos-5"}' --claims '{"nationalities": ["DEU"]}'
	@echo
	-$(BIN)/geofence check --ip 5.255.255.5 --method POST --path /v1/messages --body '{"model": "haiku"}'

test: $(BIN)/geofence
	$(BIN)/ruff check geofence tests benchmarks
	$(BIN)/ruff format --check geofence tests benchmarks
	$(BIN)/mypy geofence
	$(BIN)/python -m pytest

bench: $(BIN)/geofence
	$(BIN)/python benchmarks/lookup.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
