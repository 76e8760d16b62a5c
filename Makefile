# One target per job. Everything runs in .venv, which `make setup` creates from scratch.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A pinned torch: on these CPU machines pip serves its CPU build; an unpinned torch would pull
# a multi-GB CUDA build. On a GPU machine, pass TORCH="torch" (or an index URL) instead.
TORCH  ?= torch==2.13.0

.PHONY: setup demo bench-tiny test test-interpret lint format clean

$(BIN)/tgpool: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/tgpool

# build/zoo on the path: the demo's enable() part runs torchvision's GoogLeNet, unmodified
demo: setup build/zoo
	PYTHONPATH=build/zoo $(BIN)/tgpool demo

# The benchmark harness on tiny shapes through the interpreter (not a timing): it must not rot.
bench-tiny: setup
	$(BIN)/tgpool bench --tiny --out build/bench-tiny

# timm's pooling heads for tests/test_patch.py, without timm's dependencies (that test loads one
# file, timm/layers/adaptive_avgmax_pool.py, without importing timm or torchvision).
build/timm: $(BIN)/tgpool
	$(BIN)/python -m pip install -q --no-deps --target $@ timm==1.0.31

# Real model zoos for tests/test_enable_models.py, without their dependencies (torchvision's would
# replace the CPU torch; what they import is in the dev extra).
build/zoo: $(BIN)/tgpool
	$(BIN)/python -m pip install -q --no-deps --target $@ torchvision==0.28.0 timm==1.0.31

# The whole suite on CPU: every kernel runs through the Triton interpreter.
test: setup build/timm build/zoo
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q tests

test-interpret: test

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tgpool tests

format: setup
	$(BIN)/ruff format tgpool tests
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
