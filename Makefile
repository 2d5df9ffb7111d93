# Every target creates .venv and installs the project first, so a fresh clone
# needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test check lint format typecheck protos protos-check contracts contracts-baseline browser interop-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the whole mesh on an embedded etcd (meshctl up)
run: $(STAMP)
	$(BIN)/meshctl up

## test: lint, type-check, check the contracts and run the whole test suite.
## Most integration tests wait on etcd leases and processes rather than the
## CPU, so three pytest workers (one test file each) fit on 2 cores.
test: $(STAMP) browser interop-deps check contracts
	$(BIN)/python -m pytest -q -m "not contracts" -n 3 --dist loadfile

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

## contracts: buf lint and buf breaking against protos/baseline.binpb, then the
## contract tests, which call every method of every service through the mesh
contracts: $(STAMP)
	$(BIN)/python scripts/check_contracts.py
	$(BIN)/python -m pytest -q -m contracts tests/contracts

## contracts-baseline: make the current contracts the released baseline; run it
## when a version is released, and commit protos/baseline.binpb with it
contracts-baseline: $(STAMP)
	$(BIN)/python scripts/check_contracts.py --write-baseline

## browser: install Debian's chromium for the browser test when running as root
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "not root: skipping the chromium install, so the browser test will skip"; fi

## interop-deps: install Debian's Go toolchain, grpc-go and etcd Go sources for
## the Go interop test when running as root
INTEROP_PACKAGES := golang-go golang-google-grpc-dev golang-etcd-server-dev
# One file of each package that the test needs, as tests/interop/conftest.py checks.
INTEROP_FILES := /usr/bin/go \
	/usr/share/gocode/src/google.golang.org/grpc/health/grpc_health_v1/health.pb.go \
	/usr/share/gocode/src/go.etcd.io/etcd/clientv3/naming/resolver/resolver.go
interop-deps:
	@if ls $(INTEROP_FILES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $(INTEROP_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $(INTEROP_PACKAGES) >/dev/null; }; \
	else echo "not root: skipping the Go package install, so the interop test will skip"; fi

## bench: run the benchmark suite on loopback (about 5 minutes on 2 cores)
## and rewrite docs/benchmarks.md
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
