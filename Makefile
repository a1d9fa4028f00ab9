# Set-up is two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tilefuse-installed

.PHONY: demo test test-targets test-fast lint format bench bench-cpu docs fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: a CPU build is on this machine's disk; nothing later may replace it.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/gpt2.py --speed
	$(PY) examples/gpt2.py --dtype bfloat16 --speed
	$(PY) examples/llama.py --speed
	$(PY) examples/llama.py --dtype bfloat16 --speed
	$(PY) examples/unet.py --speed
	$(PY) examples/unet.py --dtype bfloat16 --speed
	$(PY) examples/dit.py --speed
	$(PY) examples/dit.py --dtype bfloat16 --speed

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m "not targets"

# the Triton target sweep: compiles every example kernel for every GPU target (slow when cold)
test-targets: $(STAMP)
	$(PY) -m pytest -q -m targets

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not targets"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/compile_time.py
	$(PY) benchmarks/fusion.py
	$(PY) benchmarks/explain.py
	$(PY) benchmarks/host_overhead.py

# CPU speed against eager and torch.compile; slow (cold compiles), rewrites benchmarks/RESULTS.md
bench-cpu: $(STAMP)
	$(PY) benchmarks/cpu_speed.py --runs 20 --write

# the differential fuzzer beyond make test's fixed batch: make fuzz N=1000 SEED=5000
N ?= 500
SEED ?= 100000
TRITON_EVERY ?= 5
fuzz: $(STAMP)
	$(VENV)/bin/tilefuse fuzz --n $(N) --seed $(SEED) --triton-every $(TRITON_EVERY) \
		--known tests/fuzz/known_failures.toml --regressions tests/fuzz/regressions

docs: $(STAMP)
	$(PY) -m compiler.docs > docs/ops.md

clean:
	rm -rf $(VENV) build .pytest_cache
