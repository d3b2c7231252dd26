# The two commands: `make demo` and `make test`. Each sets up what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@scripts/ensure-system.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing the project and its dev tools into $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@scripts/ensure-system.sh mosquitto || echo "(no Mosquitto: the demo falls back to the embedded broker)"
	@$(BIN)/python -m scripts.demo

lint: $(STAMP)
	@$(BIN)/ruff check .
	@$(BIN)/lint-imports
	@$(BIN)/mypy

test: $(STAMP)
	@scripts/ensure-system.sh mosquitto postgresql
	@$(MAKE) --no-print-directory lint
	@$(BIN)/python -m pytest -q

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "==> $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
