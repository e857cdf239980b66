# SPD-YOLO: the two commands of the README are `make demo` and `make test`; each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Never download at run time, never auto-install, no telemetry.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false

.PHONY: demo test test-fast test-deploy lint wheel-smoke models venv clean

# The deploy tier's own venv: the project with its converters (the deploy extra: OpenVINO, NCNN/pnnx, MNN, LiteRT,
# CoreML tools), apart from .venv so `make test` never sees them.
DVENV := .venv-deploy
DPY := $(DVENV)/bin/python
DSTAMP := $(DVENV)/.installed

# Create the venv and install the project (editable) with its test/export extras; redone when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

# Main job: demo data -> train yolov5n-SPD and yolov5n -> COCO table side by side -> detect on video -> ONNX export.
demo: $(STAMP)
	$(PY) -m spd_yolo.demo

# Model table for the README (every SPD model beside its stock counterpart, nc=80, 640x640).
models: $(STAMP)
	$(PY) -m spd_yolo.models.summary

# The whole test suite (CI runs this through .ci/run), one pytest worker per core (pytest-xdist; each test process
# uses one torch thread, see conftest.py), listing its 20 slowest tests (each over 30 s says why in a comment above it).
test: $(STAMP)
	$(PY) -m pytest -n auto --durations=20

# Every export format in its own runtime, on tiny models (tests marked `deploy`; `make test` skips them).
$(DSTAMP): pyproject.toml
	@test -x $(DPY) || $(PYTHON) -m venv $(DVENV)
	$(DPY) -m pip install --quiet --upgrade pip
	$(DPY) -m pip install --quiet -e ".[dev,deploy]"
	@touch $(DSTAMP)

test-deploy: $(DSTAMP)
	$(DPY) -m pytest -m deploy -p no:cacheprovider

# Quick loop while developing: skip the slow end-to-end tests.
test-fast: $(STAMP)
	$(PY) -m pytest -n auto -m "not slow"

# ruff with the rules configured in pyproject.toml ([tool.ruff]); CI runs it before the tests.
lint: $(STAMP)
	$(PY) -m ruff check .

# The wheel on its own (CI runs it after `make test`): build the wheel, install it (not editable, with the export
# extra) into a fresh venv in a temp folder outside the repo, and run import, model table, every console command's
# --help, a 1-epoch train, plain-ultralytics load, val, ONNX export and detect there. Needs no .venv; ~5 min, ~6 GB disk.
wheel-smoke:
	PYTHON=$(PYTHON) bash .ci/wheel_smoke.sh

clean:
	rm -rf $(VENV) $(DVENV) build *.egg-info .pytest_cache
