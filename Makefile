# The two commands of the README: `make demo` (set up, then the main job) and `make test` (set up, then the
# whole suite). Everything they need is installed by scripts/setup.sh.
VENV := .venv
PY := $(VENV)/bin/python
PYBUILD := $(VENV)/bin/pybuild
JOBS ?= 2

.PHONY: setup demo test fuzz bench bench-build lint

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m mypy
	$(PY) -m pytest -n $(JOBS) -q

# The parser's 100,000 inputs, 20,000 planner mutants (to cache keys) and 5,000 mutated layer tars.
fuzz: setup
	PYBUILD_FUZZ_EXAMPLES=100000 PYBUILD_FUZZ_PLAN_EXAMPLES=20000 PYBUILD_FUZZ_TAR_EXAMPLES=5000 \
		$(PY) -m pytest -q -n $(JOBS) -p no:randomly tests/differential/test_fuzz*.py

bench: setup
	$(PY) benchmarks/parse.py

bench-build: setup
	$(PY) benchmarks/build.py

lint: setup
	$(PY) -m mypy
