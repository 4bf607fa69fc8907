# Two entry points for a fresh machine: `make serve` and `make test`.
# Both bootstrap .venv (once; quick when pyproject.toml has not changed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
ARGS ?=

CHROMIUM := /usr/bin/chromium
REDIS := /usr/bin/redis-server
NGINX := /usr/sbin/nginx

.PHONY: serve test test-unit test-integration test-e2e lint bench clean-venv

# pyproject.toml's dependencies and entry points (the `spatialjam` script, and the
# `spatialjam.commands` group through which bench/ adds `spatialjam bench`) reach .venv only by
# installing the project, so any change to it installs again.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The tests also run the training path (a tiny run), so they need the train extra (torch CPU);
# `make serve` does not.
$(TRAIN_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,train]'
	touch $(TRAIN_STAMP)

# The browser tests drive Debian's chromium (a browser cannot be downloaded here). Installed
# once when missing; without it (no apt, no root) those tests skip and say why.
$(CHROMIUM):
	-if command -v apt-get >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; fi

# The multi-node tests start their own Redis server (Debian's redis-server; the package's
# service is not started). Installed once when missing; without it those tests skip.
$(REDIS):
	-if command -v apt-get >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    redis-server; fi

# The reverse-proxy tests run the configurations in docs/proxy (Debian's nginx-light and caddy;
# their services are not started). Installed once when missing; without them those tests skip.
$(NGINX):
	-if command -v apt-get >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    nginx-light caddy; fi

serve: $(STAMP)
	$(BIN)/spatialjam serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) $(TRAIN_STAMP) $(CHROMIUM) $(REDIS) $(NGINX) lint
	$(BIN)/python -m pytest $(ARGS)

# One tier at a time (`make test` runs them all, and bench/'s tests). Unit: no servers, sockets
# or child processes, and without the tests marked slow (they run in `make test`): under two
# minutes on a shared 2-core machine, with neither chromium, Redis nor the train extra.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "not slow" $(ARGS)

# Real servers, aiortc bots, Redis, child processes.
test-integration: $(STAMP) $(REDIS) $(NGINX)
	$(BIN)/python -m pytest tests/integration $(ARGS)

# Real Chromium against real servers.
test-e2e: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest tests/e2e $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-only $(ARGS)

clean-venv:
	rm -rf $(VENV)
