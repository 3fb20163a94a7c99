# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-compat lint typecheck chaos chaos-pg bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: one registry node on 0.0.0.0:8080 (metrics on 9090), data in ./data
run: $(STAMP)
	DATA_DIR=$${DATA_DIR:-./data} DATABASE_PATH=$${DATABASE_PATH:-./data/registry.db} \
	REGISTRY_PORT=$${REGISTRY_PORT:-8080} METRICS_PORT=$${METRICS_PORT:-9090} \
	$(BIN)/mcp-mesh-registry

## test: lint, type check and the whole test suite
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q -rs

## test-compat: only the compatibility suite (published SDK, meshctl)
test-compat: $(STAMP)
	$(BIN)/pytest -q -rs -m compat

## bench: issue 7's scenarios against the Go registry (~12 min); writes benchmarks/RESULTS.md
bench: $(STAMP)
	$(BIN)/python -m benchmarks run --scenario all

## chaos: a 5-minute partition-chaos run with every nemesis (needs root, iproute2, nftables)
chaos: $(STAMP)
	$(BIN)/python -m jepsen_like run --time-limit 300 --nemesis all --seed $${SEED:-$$(date +%s)}

## chaos-pg: the same against the PostgreSQL topology (DATABASE_TYPE=postgresql), its nemeses
chaos-pg: $(STAMP)
	$(BIN)/python -m jepsen_like run --topology postgresql --time-limit 300 --nemesis all \
		--seed $${SEED:-$$(date +%s)}

lint: $(STAMP)
	$(BIN)/ruff check registry replication jepsen_like tests benchmarks
	$(BIN)/ruff format --check registry replication jepsen_like tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
