# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test check venv system-packages clean

$(BIN)/chute: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dask,test]'
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

test: venv system-packages
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) var
