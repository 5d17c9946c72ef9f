# Two commands for a new user: `make run` (set up and start the app), `make test` (set up and
# run the whole suite). Both create .venv themselves from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test lint format clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(VENV)/.installed
	$(PY) -m ruff check lrbs pages tests app.py
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check lrbs pages tests app.py
	$(PY) -m ruff format --check lrbs pages tests app.py

format: $(VENV)/.installed
	$(PY) -m ruff format lrbs pages tests app.py

clean:
	rm -rf $(VENV) .pytest_cache
