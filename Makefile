# The README's first two commands: `make run` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
VARIANT ?= aws-dev
STATE := .state/$(VARIANT)
USER_DATA ?= examples/user-data/$(VARIANT).toml

.PHONY: run test lint bench system-deps clean images

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

# The admin and control images (cached: a no-op when nothing they are made of changed).
images: $(STAMP)
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/examples/containers.conf} \
	$(BIN)/reconciler images build

run: $(STAMP) images
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/examples/containers.conf} \
	$(BIN)/reconciler serve --state-dir $(STATE) --variant $(VARIANT) --user-data $(USER_DATA) $(RUN_FLAGS)

test: system-deps $(STAMP) images
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/examples/containers.conf} \
	$(BIN)/python -m pytest -q $(PYTEST_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: system-deps $(STAMP)
	CONTAINERS_CONF=$${CONTAINERS_CONF:-$(CURDIR)/examples/containers.conf} \
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(STATE) build *.egg-info
