# The two commands: `make run` (the whole system, in the foreground) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test bench ui-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m devstack

test: install
	$(BIN)/python -m pytest

# Benchmarks, not part of `make test`: each is `python -m bench.NAME` on its own embedded PostgreSQL
# and exits non-zero when over its target. Add a module to BENCHMARKS to run it too.
BENCHMARKS := bench.analysis

bench: install
	@set -e; for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python -m $$b; done

# Not part of `make test`: needs Chromium (apt-get install -y chromium). Refreshes docs/web-ui.png.
ui-check: install
	$(BIN)/python scripts/check_web_ui.py

clean:
	rm -rf $(VENV) *.egg-info
