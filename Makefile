# ITS developer entry points. `make run` and `make test` are the two promises of the README.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SERVICE_DIRS := $(sort $(patsubst %/pyproject.toml,%,$(wildcard services/*/pyproject.toml)))
PYPROJECTS := libs/common/pyproject.toml $(addsuffix /pyproject.toml,$(SERVICE_DIRS)) requirements-dev.txt
EDITABLES := -e 'libs/common[local,model,simmarket]' $(foreach s,$(SERVICE_DIRS),-e $(s))

.PHONY: venv run test lint typecheck pytest bench chaos clean distclean

venv: $(VENV)/.installed

$(VENV)/.installed: $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(EDITABLES) -r requirements-dev.txt
	touch $@

## Start the whole system locally: Redis, PostgreSQL, migrations, simulator and every service.
## BROKER=sim (default: the built-in paper broker), ib-sim (the local IB Gateway simulator) or ib.
BROKER ?= sim
run: venv
	BROKER=$(BROKER) $(BIN)/its-local run

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy -p its_common $(foreach s,$(SERVICE_DIRS),-p its_$(notdir $(s)))
	$(BIN)/mypy tests

pytest: venv
	$(BIN)/pytest

## ruff, mypy and pytest: what CI runs.
test: lint typecheck pytest

## Benchmarks (figures printed as ratios against a ceiling measured in the same run).
bench: venv
	$(BIN)/python -m tests.bench

## Whole-stack chaos run: seeded faults, then every bar and trade checked against REST truth.
## VARIANT=short (a fault of each kind, part of `make test`) or soak (every fault, >= 30 min).
VARIANT ?= short
SEED ?= 1
chaos: venv
	$(BIN)/python -m tests.chaos --variant $(VARIANT) --seed $(SEED)

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache

## Also removes PostgreSQL data that `make run` as root kept outside a private checkout
## (var/postgres/LOCATION names it; only a path under ITS's own /var/lib/its-local is removed).
distclean: clean
	@location=var/postgres/LOCATION; if [ -f "$$location" ]; then \
	  dir="$$(head -n 1 "$$location")"; \
	  case "$$dir" in /var/lib/its-local/postgres-data/?*) echo "rm -rf $$dir"; rm -rf "$$dir";; esac; \
	fi
	rm -rf $(VENV) var
