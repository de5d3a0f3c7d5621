# Two entry points: `make run` sets up and starts the service, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test lint setup clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fooocus-api $(ARGS)

test: $(STAMP) browser
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The WebUI browser tests drive Debian's chromium with Playwright (a test tool's own browser
# download does not work offline). Installed here when missing and we are root, as in CI.
browser:
	@if [ -x "$(CHROMIUM)" ] || [ -n "$$CHROMIUM_PATH" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the WebUI browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium not found: the WebUI browser tests will skip (apt-get install chromium)"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)
