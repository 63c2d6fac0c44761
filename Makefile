# medequity: the two commands of the README.
#   make demo  - create .venv, install, run the main job on built-in data, write a report
#   make test  - create .venv if missing, run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medequity-installed
DEMO_OUT ?= reports/demo

.PHONY: demo test install benchmark clean

install: $(STAMP)

# torch/torchvision are installed with plain pip first: pip takes the pinned wheels from the
# machine's disk; the rest is pinned in requirements.lock.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	# sam2 ships as source: built against the torch above (no isolated build env, which would fetch
	# another torch), CPU only.
	SAM2_BUILD_CUDA=0 $(PY) -m pip install --quiet --no-build-isolation setuptools wheel sam2==1.1.0
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medequity demo --out $(DEMO_OUT)

# ruff (lint, import order), mypy (the typed interfaces), then the tests — the import-layer
# contract is tests/test_architecture.py.
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 -q -m "not slow" tests

benchmark: $(STAMP)
	$(PY) benchmarks/bootstrap_vs_fairlearn.py

clean:
	rm -rf $(VENV) reports .pytest_cache .hypothesis
