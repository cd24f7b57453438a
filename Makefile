# One command sets up and runs each job: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean vulkan-driver

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

bench: $(STAMP)
	$(PY) bench/compile_time.py
	$(PY) bench/extraction.py
	$(PY) bench/memory_plan.py
	$(PY) bench/runtime_cpu.py
	$(PY) bench/models_cpu.py
	$(PY) bench/runtime_vulkan.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
