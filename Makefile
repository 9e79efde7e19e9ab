# `make run`: install into .venv and run the demo for a bounded time, then print the report.
# `make test`: install into .venv and run the whole suite.
# The first Python 3.12 that runs: python3.12 on PATH (a pyenv shim may exist without a 3.12 selected), then pyenv's.
PYTHON ?= $(shell for p in python3.12 $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { command -v $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-servers bench clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "python3.12 not found on PATH or in pyenv" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo starts from an empty state each time (--fresh --force: the last run's journal is moved aside): its feed
# starts every target flat, which positions recovered from an earlier run would not match.
# The demo's feed starts every strategy flat, so each `make run` starts the demo from an empty state (its journal
# and order ids under config/demo/var are the previous demo's, removed, not recovered).
run: $(STAMP)
	rm -rf config/demo/var
	$(VENV)/bin/orchestrator run config/demo --feed 1000 --duration 10

# The kernel tests run a second time with numba's bounds checks on (their own compile cache): an index out of a
# table's range is then an IndexError in the test, not a silent read of the next region of the arena.
test: $(STAMP) test-servers
	$(PY) -m pytest -q
	NUMBA_BOUNDSCHECK=1 ORCHESTRATOR_CACHE_ROOT=.numba_cache/boundscheck $(PY) -m pytest -q tests/kernels

# The servers the tests start for real (redis-server, prometheus, headless chromium): Debian packages, installed
# only when missing (tests/infra/install_servers.sh). `make run` needs none of them.
test-servers:
	@sh tests/infra/install_servers.sh

# `make bench`: micro benches, regression gate, end to end, report (bench/README.md). BENCH_ARGS="--quick" etc.
bench: $(STAMP)
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .numba_cache .pytest_cache .benchmarks
