# SPD-YOLO: the two commands of the README are `make demo` and `make test`; each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Never download at run time, never auto-install, no telemetry.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := false

.PHONY: demo test test-fast models venv clean

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

# The whole test suite (CI runs this through .ci/run).
test: $(STAMP)
	$(PY) -m pytest

# Quick loop while developing: skip the slow end-to-end tests.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
