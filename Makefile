# otpy — common tasks. GNU make; needs only python3 (and network for pip) on a fresh machine.
#
#   make test              lint + the test suite under coverage (what .ci/run runs)
#   make lint              ruff + mypy
#   make run               start the chat server (dev config, 127.0.0.1, data in var/)
#   make demo              run the hello example on a fresh node
#   make bench             the workloads of docs/benchmarks.md, otp vs the floors (not in test)
#   make bench ONLY="ping_pong call"   (ONLY=chat, ONLY=tables: a group of workloads)
#   make soak              the SIGKILL crash-safety tests, 300 kills (disc and replicated);
#                          the live chat upgrade test with 10 000 user processes
#   make clean             build artefacts and caches; `make distclean` also drops .venv

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp

# bash + pipefail: `coverage report | tail` must not hide a failing report.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.DEFAULT_GOAL := test
.PHONY: venv run demo lint test soak bench clean distclean

# The venv is rebuilt (re-installed) whenever pyproject.toml or the C accelerator changes.
$(STAMP): pyproject.toml setup.py otp/dist/_etf_accel.c
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m chat --config config/dev.yaml

demo: $(STAMP)
	$(BIN)/python -m otp run examples.hello:main

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy otp

test: lint
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --skip-covered --sort=cover | tail -n 25

# The crash-safety tests with many more SIGKILLs than CI runs.
soak: $(STAMP)
	OTP_TABLES_CRASH_KILLS=300 $(BIN)/python -m pytest tests/test_tables_crash.py -q
	CHAT_UPGRADE_SESSIONS=10000 $(BIN)/python -m pytest tests/test_chat_release_upgrade.py -q
	OTP_TABLES_REPL_KILLS=300 $(BIN)/python -m pytest tests/test_tables_repl_cluster.py -q -k killed

bench: $(STAMP)
	$(BIN)/python -m bench $(if $(ONLY),--only "$(ONLY)")

clean:
	rm -rf build dist _build *.egg-info .coverage .coverage.* \
	       .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
