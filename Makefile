# Two commands for a new user: `make run` (set up and start the app), `make test` (set up and
# run the whole suite). Both create .venv themselves from requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test lint format clean browser postgres bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(VENV)/.installed browser postgres
	$(PY) -m ruff check lrbs pages tests bench app.py
	$(PY) -m pytest -q -n 2 --dist loadfile

# The browser tests drive Debian's chromium. Install it where this machine allows (root with
# apt); elsewhere tests/e2e skips with a loud message.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq chromium)) || \
	    echo "*** could not install chromium: the browser tests will be skipped ***"; \
	  else echo "*** chromium missing and not installable here (needs root + apt): the browser tests will be skipped ***"; fi; }

# tests/test_postgres.py starts a throwaway PostgreSQL server (Debian's initdb and pg_ctl, on
# PATH or in /usr/lib/postgresql/*/bin). Install it where this machine allows (root with apt);
# elsewhere those tests are skipped with a loud message.
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq postgresql)) || \
	    echo "*** could not install postgresql: the PostgreSQL tests will be skipped ***"; \
	  else echo "*** PostgreSQL missing and not installable here (needs root + apt): the PostgreSQL tests will be skipped ***"; fi; }

bench: $(VENV)/.installed browser
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m bench.run

lint: $(VENV)/.installed
	$(PY) -m ruff check lrbs pages tests app.py
	$(PY) -m ruff format --check lrbs pages tests app.py

format: $(VENV)/.installed
	$(PY) -m ruff format lrbs pages tests app.py

clean:
	rm -rf $(VENV) .pytest_cache
