# Two entry points for a fresh machine: `make serve` and `make test`.
# Both bootstrap .venv (once; quick when pyproject.toml has not changed).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

CHROMIUM := /usr/bin/chromium

.PHONY: serve test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The browser tests drive Debian's chromium (a browser cannot be downloaded here). Installed
# once when missing; without it (no apt, no root) those tests skip and say why.
$(CHROMIUM):
	-if command -v apt-get >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium; fi

serve: $(STAMP)
	$(BIN)/spatialjam serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) $(CHROMIUM) lint
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest bench --benchmark-enable --benchmark-only $(ARGS)

clean-venv:
	rm -rf $(VENV)
