# The two commands of README.md: `make demo` and `make test`. Both set up first.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup demo test fuzz boards lint format clean

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/orbithil demo

# pytest exits 5 when it collects no tests; that is a failure here, like any other.
# The suite runs on every core (pytest-xdist; TEST_WORKERS=0 runs it in one process) and
# ends with its 25 slowest tests, so the log shows where the time goes.
TEST_WORKERS ?= auto
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=25 $(PYTEST_ARGS)

# The fuzz suite at 10,000 derandomized examples per target (make test gives it 2,000).
fuzz: setup
	$(PY) -m pytest -n $(TEST_WORKERS) -m slow tests/test_fuzz.py --hypothesis-profile=fuzz

# Every board bitstream placed and routed on the UP5K (make test checks the flight one):
# the flight builds and the hardened bench build with injection; fails if one does not fit
# or misses 12 MHz.
boards: setup
	$(VENV)/bin/orbithil synth --harden both --fec 1 --inject 0
	$(VENV)/bin/orbithil synth --harden 1 --fec 0 --inject 1

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf sim_build build reports .pytest_cache .ruff_cache .hypothesis hal/codec/_ccodec.*
