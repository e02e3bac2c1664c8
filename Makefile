# pex - two commands from a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.pex-installed
PYTEST_FLAGS ?=

.PHONY: install demo lint test test-slow test-postgres test-all bench bench-guardrails bench-certification bench-online bench-serve bench-soak clean

# torch first, from the CPU wheel on disk: ax-platform would otherwise pull a multi-GB CUDA build. --no-compile: pip
# would byte-compile every module of every package (torch alone has thousands) at install; Python compiles the few
# that are imported on first use instead.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --no-compile torch==2.13.0
	$(PIP) install --quiet --no-compile -e '.[dev]'
	touch $(STAMP)

# The report's browser test drives Debian's chromium through Playwright (never `playwright install`:
# it downloads its own browser build, which cannot work here). Installed once, when missing.
$(VENV)/.chromium:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	mkdir -p $(VENV) && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pex demo

# ruff's rules live in pyproject.toml ([tool.ruff]); `make test` fails on any finding.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# --durations=25: every run shows where its time went. Two xdist workers (TEST_WORKERS=0: one process); loadgroup
# keeps the modules using pipeline_run on one worker (tests/conftest.py, PIPELINE_MODULES).
TEST_WORKERS ?= 2
test: lint $(VENV)/.chromium
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_FLAGS)

# the sweeps run longer than the suite's per-test timeout of 5 minutes (pyproject.toml)
test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow --timeout=1800 $(PYTEST_FLAGS)

# Starts a throwaway PostgreSQL server (Debian's postgresql) on a unix socket and
# free loopback port, runs the store tests against it, and stops it again.
test-postgres: $(STAMP)
	bash scripts/with-postgres.sh $(VENV)/bin/pytest -m postgres $(PYTEST_FLAGS)

test-all: test test-slow test-postgres

# Accuracy, speed and memory of the effect learners vs raw EconML, policy serving speed, and the weight
# search's Ax vs dense-sweep fronts (several minutes each; --quick for a short run).
bench: $(STAMP)
	$(PY) bench/hte.py $(BENCH_FLAGS)
	$(PY) bench/policy.py
	$(PY) bench/optimize.py

# Do recommended policies truly keep their guardrails? 108 whole pipeline runs against the simulator's truth.
bench-guardrails: $(STAMP)
	$(PY) bench/guardrails.py

# Certification procedures and screens replayed on shared fits against the simulator's truth (fits cached in .certcache;
# BENCH_FLAGS=--no-fit replays cached fits only, --variant NAME=JSON adds a procedure).
bench-certification: $(STAMP)
	$(PY) bench/certification.py $(BENCH_FLAGS)

# The online loop against the simulator's truth: Ax vs random search vs the offline pick, 5 seeds (about 12 minutes;
# BENCH_FLAGS=--cold starts from quasi-random points instead of the offline candidates).
bench-online: $(STAMP)
	$(PY) bench/online.py $(BENCH_FLAGS)

# Requests/s and latency of `pex serve` over HTTP against a bare Flask endpoint, with Debian's wrk (installed once,
# when missing) and an open-loop generator for the fixed-rate run (about 3 minutes; BENCH_FLAGS=--quick: 1 minute).
bench-serve: $(STAMP)
	command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(PY) bench/serve.py $(BENCH_FLAGS)

# `pex serve` for 10 minutes at 1,000 decisions/s with 5% outcomes, a publish and a rollback in the middle: no 5xx,
# logged == answered, worker RSS growth under 10% (exit 1 otherwise; BENCH_FLAGS="--minutes 1" for a quick run).
bench-soak: $(STAMP)
	$(PY) bench/soak.py $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) .pex .pytest_cache build *.egg-info
