# The two commands: `make run` serves the app on SQLite; `make test` runs the suite on real services.
PYTHON ?= python3
VENV := .venv
RUN_STAMP := $(VENV)/.installed-run
# What the test suite and the linters need too (pytest, Hypothesis, Playwright, ruff, mypy).
STAMP := $(VENV)/.installed

.PHONY: run test services services-down lint format bench bench-scale chaos loadtest soak clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# `make run` installs only what serving needs.
$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q -e .
	@touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	@touch $(RUN_STAMP) $@

run: $(RUN_STAMP)
	$(VENV)/bin/tornado-auth serve

test: $(STAMP)
	scripts/test

services:
	scripts/services up

services-down:
	scripts/services down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Benchmarks (bench/): private Redis and MongoDB on free ports, then bench/results/*.json and
# bench/RESULTS.md (wrk, Node.js and npm are installed with apt-get when missing; the Express
# peer's locked packages with npm ci; py-spy with pip).
bench: $(STAMP)
	@for need in wrk:wrk node:nodejs npm:npm; do command -v $${need%%:*} >/dev/null && continue; \
		apt-get install -y -qq $${need#*:} || { apt-get update -qq && apt-get install -y -qq $${need#*:}; }; done
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	$(VENV)/bin/python -m bench.run

# Cost against size (bench/scale.py): each session store filled to 10^3 .. 10^6 sessions, 10^5
# users and an audit trail of 10^6 entries, on private Redis and MongoDB started for the run;
# bench/results/scale.json, scale.svg and their section of bench/RESULTS.md (a few hours; wrk is
# installed with apt-get when missing). SCALE_ARGS: some parts only, e.g. "--stores mongodb --merge".
SCALE_ARGS ?=
bench-scale: $(STAMP)
	@command -v wrk >/dev/null || apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(VENV)/bin/python -m bench.scale $(SCALE_ARGS)

# Faults under signed-in traffic (bench/chaos.py): private services on free ports, then the
# chaos table of bench/RESULTS.md and bench/results/chaos.json.
chaos: $(STAMP)
	$(VENV)/bin/python -m bench.chaos

# A headless Locust run against a server you started (make run, or serve --processes 0).
HOST ?= http://127.0.0.1:8888
USERS ?= 50
DURATION ?= 1m
loadtest: $(RUN_STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[load]'
	mkdir -p loadtest/report
	$(VENV)/bin/locust -f loadtest/locustfile.py --headless --host $(HOST) -u $(USERS) -r 10 \
		-t $(DURATION) --csv loadtest/report/run --html loadtest/report/report.html --only-summary

# A long run of the Locust scenario against serve --processes 2 on private Redis and MongoDB:
# RSS and open files of every process, Redis and MongoDB connections and the p99 once a minute,
# into bench/results/soak.json, soak.svg and bench/RESULTS.md.
SOAK_DURATION ?= 30m
SOAK_USERS ?= 50
soak: $(STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[load]'
	$(VENV)/bin/python -m bench.soak --duration $(SOAK_DURATION) --users $(SOAK_USERS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
