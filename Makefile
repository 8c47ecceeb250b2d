# Two commands cover everything (see README "Quick start"):
#   make run    install what is needed, then start the app on the shipped default model
#   make test   install what is needed (with test tools), then lint and run the whole test suite
# The virtualenv is reused while requirements are unchanged (stamp files keyed on their hash).

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 7860
BIN := $(VENV)/bin
# pytest workers for `make test` (pytest-xdist; the CI machine has 2 cores). Whole files go to one worker
# (--dist loadfile), so a module's fixtures are built once. PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

DEPS_HASH := $(shell cat requirements.txt | sha256sum | cut -c1-16)
DEV_HASH := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
# The editable install points at this checkout, so its stamp is keyed on the checkout's path too.
PROJECT_HASH := $(shell (cat pyproject.toml; echo "$(CURDIR)") | sha256sum | cut -c1-16)

RUNTIME_STAMP := $(VENV)/.stamp-runtime-$(DEPS_HASH)
DEV_STAMP := $(VENV)/.stamp-dev-$(DEV_HASH)
PROJECT_STAMP := $(VENV)/.stamp-project-$(PROJECT_HASH)

.PHONY: run test install install-dev lint format bench demo screenshot clean

run: install
	@# One local user: one shared, persistent set of classes (a public server keeps them per visitor).
	$(BIN)/acmr serve --host $(HOST) --port $(PORT) --shared-classes

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@# pytest exits 5 when it collected no test: that is a failure here, not a silent pass.
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

install: $(RUNTIME_STAMP) $(PROJECT_STAMP)

install-dev: $(DEV_STAMP) $(PROJECT_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

$(PROJECT_STAMP): pyproject.toml | $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

demo: install
	$(BIN)/acmr build-demo

# The README's and docs/app.md's pictures: each tab on a laptop (1366×900) and a phone (390×844), taken by the
# browser test into docs/screenshots (a plain test run writes them to a temporary folder and leaves the checkout
# untouched).
screenshot: install-dev
	ACMR_SCREENSHOT_DIR=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q \
		tests/test_app_layout_browser.py -k test_every_tab_fits_the_screen_and_is_reachable

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
