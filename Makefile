# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The extras installed into .venv: media for the bundled modules (and the media
# test clips), test for the suite. An extra the tests come to need (dask, for
# the dask executor's tests) goes on this line.
EXTRAS := dask,media,test

.PHONY: run test lint check venv system-packages clean

$(BIN)/chute: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(BIN)/chute

run: venv
	$(BIN)/chute run

check: venv
	$(BIN)/chute check

# Debian packages the test suite drives for real (samba for the network-share
# tests, systemd-analyze for the unit checks). Installed only where we are root
# and they are missing; elsewhere the tests that need them skip with a reason.
system-packages:
	@bash tests/install-system-packages.sh

# The code's own claims, checked before any test runs: lint, format, types.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest under coverage, subprocesses included ([tool.coverage.*] in pyproject.toml), then the
# total: the report prints even when a test failed, and the exit status is pytest's failure if it
# failed, else the report's (below fail_under). The tests run in $(WORKERS) pytest-xdist workers,
# a test module to a worker (its module fixtures are made once); those marked `serial` run
# afterwards, alone. Most tests wait on daemons and settle times, so workers beyond the cores
# still shorten the run: 3 on the 2 cores of CI.
WORKERS ?= 3
test: venv system-packages lint
	rm -rf var/coverage
	$(BIN)/coverage run -m pytest -n $(WORKERS) --dist loadscope -m "not serial"; status=$$?; \
	$(BIN)/coverage run -m pytest -m serial; serial=$$?; \
	$(BIN)/coverage combine --quiet && $(BIN)/coverage report; report=$$?; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	if [ $$serial -ne 0 ]; then exit $$serial; fi; exit $$report

clean:
	rm -rf $(VENV) var
