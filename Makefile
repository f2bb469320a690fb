# All set-up happens here: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test unit fmt lint typecheck pytest demo safety-soak retention-soak chaos fuzz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/raftmq demo

test: lint typecheck pytest

# The tests that need no broker and no database (under a minute): the safety search runs
# 50 seeds here (500 in `make test`), the write-rule and decoder fuzz 40 examples (150), the
# SQLite crash loop 15 SIGKILLs (50).
unit: $(STAMP)
	RAFTMQ_SAFETY_SEEDS=$${RAFTMQ_SAFETY_SEEDS:-50} RAFTMQ_FUZZ_EXAMPLES=$${RAFTMQ_FUZZ_EXAMPLES:-40} \
		RAFTMQ_CRASH_KILLS=$${RAFTMQ_CRASH_KILLS:-15} $(BIN)/pytest -q -m 'not integration and not slow'

# Rewrite the tree into the shape `make lint` checks (import order, formatting, safe fixes).
fmt: $(STAMP)
	$(BIN)/ruff check --fix raftmq tests benchmarks migrations tools
	$(BIN)/ruff format raftmq tests benchmarks migrations tools

lint: $(STAMP)
	$(BIN)/ruff check raftmq tests benchmarks migrations tools
	$(BIN)/ruff format --check raftmq tests benchmarks migrations tools

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# Thousands of randomized safety seeds; not part of `make test`.
safety-soak: $(STAMP)
	RAFTMQ_SAFETY_SEEDS=$${RAFTMQ_SAFETY_SEEDS:-5000} $(BIN)/pytest -q -m slow tests/sim

# Retention on a real cluster with the issue's figures: 200,000 writes keeping the newest
# 20,000 entries (`make test` runs 30,000 / 3,000); prints each node's database size
# series. A few minutes; not part of `make test`.
retention-soak: $(STAMP)
	RAFTMQ_RETENTION_WRITES=$${RAFTMQ_RETENTION_WRITES:-200000} $(BIN)/pytest -q -s \
		tests/node/test_retention_processes.py

# Long fuzzing of every decoder and of the write rules (no broker); `make test` runs a
# short one.
fuzz: $(STAMP)
	RAFTMQ_HYPOTHESIS_PROFILE=fuzz RAFTMQ_FUZZ_EXAMPLES=$${RAFTMQ_FUZZ_EXAMPLES:-20000} $(BIN)/pytest -q tests/hostile

# Chaos runs against the local broker (restarts the RabbitMQ application); not in `make test`.
chaos: $(STAMP)
	$(BIN)/pytest -q -m slow tests/chaos

# Every benchmark, one after the other (needs RabbitMQ and PostgreSQL; a few minutes): their
# text on the terminal, their figures in benchmarks/results/*.json and drawn to
# benchmarks/results/figures.png. The bench extra (rich, matplotlib) has its own stamp, so
# `make test` never installs it.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_RESULTS := benchmarks/results
BENCHMARKS := core_throughput storage transport node producer subscriber pubsub stream_replay

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	mkdir -p $(BENCH_RESULTS)
	set -e; for name in $(BENCHMARKS); do \
		echo "== benchmarks/$$name.py"; \
		$(BIN)/python benchmarks/$$name.py --json $(BENCH_RESULTS)/$$name.json; \
	done
	$(BIN)/python benchmarks/plot.py $(addprefix $(BENCH_RESULTS)/,$(addsuffix .json,$(BENCHMARKS))) \
		--output $(BENCH_RESULTS)/figures.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
