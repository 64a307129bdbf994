# gearshift: every target makes its own .venv, so a fresh machine needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast check bench fuzz system-deps venv clean

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

# The fast tier: pure and in-memory tests, no processes and no databases, in under
# a minute.  tests/fast_tier.py lists its files; tests/guard.py fails any test there that
# starts a process or connects to PostgreSQL, MariaDB or Redis.  `make test` stays the
# full suite (and what CI runs).
#
# It also gates coverage (lines and branches) of the sans-IO protocol and the server's
# scheduler: FAST_COVERAGE names them, and those that exist are measured.  The tier
# reached 97.4 % when the gate was set (gearshift.protocol and the scheduler when it was
# still gearshift.server.jobs) and 97.3 % after the scheduler's split into model,
# scheduler and wakeups; FAST_COVERAGE_MIN leaves a little over a point for code still
# to be tested, not more.
FAST_COVERAGE := gearshift.protocol gearshift.server.model gearshift.server.scheduler \
	gearshift.server.wakeups
FAST_COVERAGE_MIN := 96
exists = $(wildcard src/$(subst .,/,$(1)).py src/$(subst .,/,$(1))/__init__.py)

test-fast: $(STAMP)
	$(BIN)/python -m pytest --fast $(foreach m,$(FAST_COVERAGE),$(if $(call exists,$(m)),--cov=$(m))) \
		--cov-report=term-missing:skip-covered --cov-fail-under=$(FAST_COVERAGE_MIN)

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
