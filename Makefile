# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test unit lint services test-tools fake-email bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# Local PostgreSQL and RabbitMQ: start whichever is down (Debian packages).
services:
	bash scripts/services.sh

# What the fault tests need beside them (libfaketime), from Debian's packages.
test-tools:
	bash scripts/test-tools.sh

run: install services
	$(BIN)/birthdayd migrate --create-db
	$(BIN)/birthdayd run

fake-email: install
	$(BIN)/birthdayd fake-email --port 8025

lint: install
	$(BIN)/ruff check birthdayd tests
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest tests/unit

test: install services test-tools lint
	$(BIN)/python -m pytest

# A benchmark, not a test: end-to-end greetings/s, median of several runs.
bench: install services
	$(BIN)/python tests/performance/pipeline.py --users 20000 --workers 1 --runs 3

clean:
	rm -rf $(VENV) build *.egg-info
