# Two commands for a fresh machine: `make demo` (the main job: jepa quickstart) and `make test` (the suite).
# Both create .venv and install the package into it the first time, and reuse it after.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jepa quickstart --task two-room --out runs/quickstart

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

bench: $(STAMP)
	$(PY) -m experiments.benchmarks.collect_throughput

clean:
	rm -rf runs
