# The two commands of the README: `make demo` and `make test`.
# Both set up everything they need: system packages (Debian), a virtualenv with
# wirebeat installed editable, and the Elasticsearch node (scripts/esnode.py).

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup deps demo test bench es-start es-stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

deps:
	bash scripts/install-deps.sh

demo: deps setup
	$(PY) scripts/demo.py

test: deps setup
	$(PY) -m pytest -q

bench: deps setup
	$(PY) tests/bench/run.py

es-start: setup
	$(PY) scripts/esnode.py start

es-stop:
	$(PY) scripts/esnode.py stop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
