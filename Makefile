# The two commands of the README: `make demo` (the main job on an embedded default) and `make test`.
# Both create .venv when missing and install torch==2.13.0 first (a CPU wheel here), then pptune.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	DS_ACCELERATOR=cpu $(BIN)/python -m pptune demo --out results/demo

test: $(STAMP)
	DS_ACCELERATOR=cpu $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check pptune tests benchmarks

clean:
	rm -rf $(VENV) results/demo
