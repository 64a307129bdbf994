# gearshift: every target makes its own .venv, so a fresh machine needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench fuzz system-deps venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the interop tests and benchmarks talk to (gearmand, gearman, gearadmin, PHP, Perl).
system-deps:
	bash scripts/install-system-deps.sh

run: $(STAMP)
	$(BIN)/gearshift server

test: $(STAMP) system-deps
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff format --check src tests
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict

# A longer seeded fuzzing campaign against a gearshift server (MINUTES=5 by default;
# SEED=N replays one); `make test` runs a short one.  See docs/robustness.md.
fuzz: $(STAMP)
	$(BIN)/python -m tests.hostile.fuzz --minutes $(or $(MINUTES),5) $(if $(SEED),--seed $(SEED))

bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
