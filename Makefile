# The two commands of the README. Each sets up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench clean

$(VENV)/.base-installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.base-installed
	$(PY) -m pip install --quiet -e ".[test,jax]"
	touch $@

demo: $(VENV)/.base-installed
	$(PY) -m keras_vae demo --output-dir runs/demo --overwrite

# pytest exits 5 when it collects no test: that is a failure, not a pass.
# Two workers (pytest-xdist): the suite is mostly single-threaded tracing
# and subprocess start-up, so it uses both cores of a 2-core runner.
test: $(VENV)/.test-installed
	$(PY) -m pytest -q -n 2 --dist loadfile; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$status

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(PY) -m pip install --quiet -e ".[test,jax,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) runs build *.egg-info
