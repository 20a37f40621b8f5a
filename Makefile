# Every target that runs the app installs it first, so a fresh clone needs
# nothing but `make run` or `make test`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FLASK := $(BIN)/flask --app promptgen

PORT ?= 5000
SIMULATOR_PORT ?= 5001

# Without a token the bundled simulator stands in for api.replicate.com.
ifeq ($(strip $(REPLICATE_API_TOKEN)),)
PROCESSES := web worker simulator
export REPLICATE_BASE_URL ?= http://127.0.0.1:$(SIMULATOR_PORT)
else
PROCESSES := web worker
endif
# honcho gives each process its own PORT, so the worker must not derive the
# webhook address from PORT: pass the web server's address to every process.
PUBLIC_URL ?= http://127.0.0.1:$(PORT)
export PORT SIMULATOR_PORT PUBLIC_URL

.PHONY: help install browser run worker test bench clean

help:
	@echo "make install  create .venv, install promptgen and apply migrations"
	@echo "make run      start web, worker and (without REPLICATE_API_TOKEN) the simulator"
	@echo "make worker   run one worker in the foreground"
	@echo "make test     run the test suite"
	@echo "make bench    benchmark the job queue against persist-queue, litequeue, huey and RQ"
	@echo "make clean    remove .venv and caches (instance/ data is kept)"

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)
	$(FLASK) db upgrade

# The browser test drives Debian's Chromium, not a browser that Playwright downloads.
browser:
	scripts/install-chromium

run: install
	@echo "promptgen: open http://127.0.0.1:$(PORT) (Ctrl-C stops everything)"
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/honcho --procfile Procfile start --port $(PORT) $(PROCESSES)

worker: install
	$(FLASK) worker

test: install browser
	$(BIN)/pytest

# The RQ runs need a local redis-server; the benchmark starts its own on 127.0.0.1.
bench: install
	command -v redis-server >/dev/null 2>&1 || { apt-get update && apt-get install -y redis-server; }
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python -m bench.queue_bench
	$(BIN)/python bench/webhook_bench.py
	$(BIN)/python -m bench.page_bench

clean:
	rm -rf $(VENV) .pytest_cache src/*.egg-info
