# clickhook developer commands. `make up` runs it all locally; `make test` is what CI runs.
SHELL := /bin/bash
VENV := .venv
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null)

.PHONY: install up test lint format kafka-start kafka-stop kafka-status clean bench bench-quick screenshot docs docs-serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@if [ -z "$(UV)" ]; then python3 -m pip install --quiet "uv==$(UV_VERSION)"; fi
	uv sync --frozen --quiet
	@touch $@

# make up DATA=~/clickhook-data keeps the broker's data, the tokens and the demo endpoint there.
up: install
	$(VENV)/bin/python deploy/local/up.py $(if $(DATA),--data "$(DATA)")

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

# The benchmark (issues 10, 15, 18): its own broker on a free port, the services as processes,
# a loopback receiver; then the scale, delivery-log and durable benches (each with its own broker
# or cluster). Prints the table and writes docs/benchmarks/ (about 20 minutes on 2 cores, some 15
# more for the durable bench's clusters and hours for the delivery log at its cap: run it on a
# quiet machine). bench-quick: one short run of each of its own scenarios (about 4 minutes), in
# docs/benchmarks/quick/; `python -m tests.bench [--quick] --only NAME ...` runs a few, carrying
# the other benches' figures from their files.
bench: install
	$(VENV)/bin/python -m tests.bench

bench-quick: install
	$(VENV)/bin/python -m tests.bench --quick

# The portal's pictures in docs/ (issues 16, 24): a throwaway broker, the pipeline, and the
# browser story test, which saves them (the endpoint list, the endpoint page with a failing
# receiver's log, the template preview). The test saves them on every passing run, `make test`
# included, so they never go stale; this target is the explicit way.
screenshot: install
	bash deploy/local/screenshot.sh docs

# The docs site (issue 24): Material for MkDocs, built --strict (broken links and anchors fail);
# the API reference, the settings and the metrics tables are generated from the code at build
# (deploy/tools/docs_reference.py). docs-serve: on 127.0.0.1 only, reloading on edits.
# NO_MKDOCS_2_WARNING: Material's banner about its successor, printed on every build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000
