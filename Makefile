# Every target creates .venv and installs the project first, so a fresh clone
# needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test check lint format typecheck protos protos-check browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the whole mesh on an embedded etcd (meshctl up)
run: $(STAMP)
	$(BIN)/meshctl up

## test: lint, type-check and run the whole test suite
test: $(STAMP) browser check
	$(BIN)/python -m pytest -q

## check: formatting, lint and strict type checks
check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## protos: regenerate protos/gen from the .proto files
protos: $(STAMP)
	rm -rf protos/gen
	$(BIN)/python scripts/gen_protos.py

## browser: install Debian's chromium for the browser test when running as root
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "not root: skipping the chromium install, so the browser test will skip"; fi

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
