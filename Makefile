# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test unit lint services test-tools fake-email bench clean bench-plans

# constraints.txt pins every dependency transitively (the image uses it too).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

# After changing a pin in pyproject.toml: install it without the old lock (pip
# keeps every installed version that still fits), then rewrite constraints.txt.
.PHONY: constraints
constraints:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python scripts/constraints.py
	touch $(STAMP)

# Local PostgreSQL and RabbitMQ: start whichever is down (Debian packages).
services:
	bash scripts/services.sh

# What the fault and metrics tests need beside them (libfaketime, Prometheus), from Debian's packages.
test-tools:
	bash scripts/test-tools.sh

# Every deployment file checked by its own tool (README: "Checking the deployment
# files"); the tools from PyPI (requirements-deploy.txt) and Debian's packages.
.PHONY: deploy-tools check-deploy
deploy-tools: install
	bash scripts/deploy-tools.sh

check-deploy: install deploy-tools
	$(BIN)/python scripts/check_deploy.py

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

test: install services test-tools lint check-deploy
	$(BIN)/python -m pytest

# A benchmark, not a test: end-to-end greetings/s, median of several runs.
bench: install services
	$(BIN)/python tests/performance/pipeline.py --users 20000 --workers 1 --runs 3

clean:
	rm -rf $(VENV) build *.egg-info

# Benchmarks, not tests (tests/performance/due.py): greetings due at one instant
# or owed after an outage; each prints every run's figures and the median of 3.
# bench-due-100k also runs the code of DUE_BEFORE (empty: skip) for before/after.
DUE_BEFORE ?= 561faed
.PHONY: bench-due-1k bench-due-100k bench-catchup

bench-due-1k: install services
	$(BIN)/python tests/performance/due.py instant --greetings 1000 --runs 3

bench-due-100k: install services
	$(BIN)/python tests/performance/due.py burst --greetings 100000 --workers 2 --runs 3 \
		$(if $(DUE_BEFORE),--before $(DUE_BEFORE))

# The target uses the greetings/s bench-due-100k saved (or DUE_RATE=...).
bench-catchup: install services
	$(BIN)/python tests/performance/due.py catchup --greetings 100000 --workers 2 --runs 3 \
		$(if $(DUE_RATE),--rate $(DUE_RATE))

# A benchmark, not a test (tests/performance/plans.py): EXPLAIN (ANALYZE, BUFFERS) of
# each hot statement among USERS users (default 10 M, in database birthdayd_bench_10m,
# made by tests/performance/generate.py on first use and reused after), statistics
# absent then fresh, medians of 3; a full daily heal; bytes per user.
USERS ?= 10000000
bench-plans: install services
	$(BIN)/python tests/performance/plans.py --users $(USERS)

# A benchmark, not a test (tests/performance/api_bench.py, Lua in tests/performance/wrk/):
# wrk -t2 -c64 -d15s against one `birthdayd run --role api` — POST /user, GET and PUT
# /user/{id} over many ids, GET /users?limit=100 at random cursors, GET /health — routes
# interleaved, medians of 3: a fresh database, 100,000 users without then with statistics,
# and POST/GET with two api processes on one port (HTTP_REUSE_PORT=1). Installs wrk if
# missing; BENCH_API_ARGS passes options (e.g. "-d3s --runs 1", "--profile /tmp/prof").
.PHONY: bench-api
bench-api: install services
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python tests/performance/api_bench.py $(BENCH_API_ARGS)

# The image as an operator runs it (scripts/check-image.sh): build, then migrate, api,
# worker, scheduler and fake-email through compose (docker-compose.check.yml, host
# network, the local PostgreSQL and RabbitMQ), one greeting end to end, health, uid,
# read-only root, exit 0 on stop; prints the image size. Uses DOCKER_HOST or the
# default socket, else starts a private engine with docker-local where it exists.
.PHONY: check-image
check-image: install services
	bash scripts/check-image.sh
