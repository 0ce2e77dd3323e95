# The two commands of the README: `make demo` and `make test`.
# Both set up everything they need: system packages (Debian), a virtualenv with
# wirebeat installed editable, and the Elasticsearch node (scripts/esnode.py).

VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup deps demo test bench fuzz es-start es-stop clean

setup: $(VENV)/.installed

# pip's and setuptools' chatter goes to a log; on failure its tail is shown. Editing any
# C accelerator source (beat/*.c, beat/*.h) re-runs this step, which rebuilds them.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard beat/*.c beat/*.h)
	@echo "setting up $(VENV) (log: $(VENV)-install.log)"
	@python3 -m venv $(VENV)
	@{ $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[test]'; } \
		> $(VENV)-install.log 2>&1 || { tail -n 30 $(VENV)-install.log; exit 1; }
	@touch $@

deps:
	bash scripts/install-deps.sh

demo: deps setup
	$(PY) scripts/demo.py

test: deps setup
	$(PY) -m pytest -q

bench: deps setup
	$(PY) tests/bench/run.py

# Coverage-guided fuzzing (atheris) of the engine and every decoder, both through
# the engine and directly through the decoder API (17 targets), seeded from
# pcaps/: FUZZ_SECONDS per target; crashes land in tests/fuzz/crashes/.
FUZZ_SECONDS ?= 60
fuzz: setup
	$(PY) -m pip install -q 'atheris>=2.3'
	$(PY) tests/fuzz/run.py --seconds-per-target $(FUZZ_SECONDS)

es-start: setup
	$(PY) scripts/esnode.py start

es-stop:
	$(PY) scripts/esnode.py stop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .fuzz
