# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint format venv migrate clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

migrate: venv
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --no-input

## Start the service on its embedded defaults (SQLite, settings from .env when present): prints a
## development API key, then runs the web server (127.0.0.1:8000), a delivery worker and the
## recovery loop; Ctrl-C stops all of them.
run: migrate
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py rundev

## Run the whole test suite.
test: venv
	$(BIN)/python -m pytest

## The suite without the tests marked slow (real servers, the chaos run, fuzzing): the quick loop.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

## Lint, import order and format, as CI checks them (ruff; pyproject.toml holds the rules).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Rewrite the tree in the house format and fix what ruff can fix safely.
format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build dist *.egg-info
	find var -mindepth 1 ! -name .gitkeep -delete
