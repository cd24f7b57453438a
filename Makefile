# One command sets up and runs each job: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-gpu bench-report clean vulkan-driver

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rlx demo

test: $(STAMP) vulkan-driver
	$(PY) -m pytest -q

# The Vulkan tests run on a real device: on a machine without a GPU that is Mesa's lavapipe.
# As root with apt, install it and the Vulkan loader; otherwise tests/test_vulkan.py says why
# it skips (wgpu itself comes with the test extra).
vulkan-driver:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then \
	  echo "installing mesa-vulkan-drivers and libvulkan1 (lavapipe) for the Vulkan tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; } || \
	  echo "could not install lavapipe: tests/test_vulkan.py will skip unless another Vulkan driver exists"; \
	fi

# The benchmark suites (bench/suite.py): each script writes JSON under bench/results/, then
# bench/report.py regenerates bench/RESULTS.md and the plots from the JSON alone. `make bench`
# is the CPU suite (20+ minutes); `make bench-gpu` the GPU suite, for the lent GPU, where there
# is no venv: `make bench-gpu PY=python3` installs nothing and runs with that Python.
# `make bench-report` regenerates RESULTS.md without running anything. ONLY=name,name runs
# some of a suite's benchmarks (bench/suite.py --dry-run lists them), TIMEOUT=s bounds each,
# BUDGET=s the whole run (what is left when a script starts is its limit).
BENCH_STAMP := $(VENV)/.bench-installed
SUITE_ARGS  = $(if $(ONLY),--only $(ONLY)) $(if $(TIMEOUT),--timeout $(TIMEOUT)) $(if $(BUDGET),--budget $(BUDGET))
BENCH_DEPS  := $(if $(filter command line environment,$(origin PY)),,$(BENCH_STAMP))

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_DEPS) vulkan-driver
	$(PY) bench/suite.py cpu $(SUITE_ARGS)

bench-gpu: $(BENCH_DEPS)
	$(PY) bench/suite.py gpu $(SUITE_ARGS)

bench-report: $(BENCH_DEPS)
	$(PY) bench/report.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
