# `make app` and `make test` do all set-up on a fresh machine: create .venv, install, run.
VENV ?= .venv
PY := $(VENV)/bin/python
export GTSRB_ROOT ?= ../shared/data

.PHONY: app test test-fast lint bench screenshots clean-cache

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $@

app: $(VENV)/.installed
	@echo "serving the app at http://localhost:8501 (open it in a browser; Ctrl-C stops it)"
	$(PY) -m streamlit run app.py

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q tests

# the engine's unit tests and tiny runs, without the browser, the cluster and the slow files (a few minutes)
test-fast: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow and not browser and not cluster" tests

bench: $(VENV)/.installed
	$(PY) bench/attacks.py
	$(PY) bench/threshold.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

screenshots: $(VENV)/.installed
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_browser.py

clean-cache:
	rm -rf runs/cache
