# clickhook developer commands. `make up` runs it all locally; `make test` is what CI runs.
SHELL := /bin/bash
VENV := .venv
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null)

.PHONY: install up test lint format kafka-start kafka-stop kafka-status clean bench bench-quick

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@if [ -z "$(UV)" ]; then python3 -m pip install --quiet "uv==$(UV_VERSION)"; fi
	uv sync --frozen --quiet
	@touch $@

up: install
	$(VENV)/bin/python deploy/local/up.py

test: install
	bash deploy/local/test.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

kafka-start:
	bash deploy/local/kafka.sh start

kafka-stop:
	bash deploy/local/kafka.sh stop

kafka-status:
	bash deploy/local/kafka.sh status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The benchmark (issue 10): its own broker on a free port, the services as processes, a
# loopback receiver; prints the table and writes docs/benchmarks/ (quick: .../quick/).
bench: install
	$(VENV)/bin/python -m tests.bench

bench-quick: install
	$(VENV)/bin/python -m tests.bench --quick
