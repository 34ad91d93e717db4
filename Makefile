# Heli's two entry points: `make demo` (the main job) and `make test`.
# Each sets up everything it needs (.venv in the repo, pinned packages) on a
# fresh machine and is safe to run again.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.heli-installed
JOBS   ?= 2

.PHONY: all demo test test-asan lint conformance scorecards lock clean venv tools

all: test

$(STAMP): pyproject.toml requirements/lock.txt examples/heli-target-opencl/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (first run only)..."
	# torch first, from its CPU wheel, so nothing can pull a CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# The out-of-tree OpenCL plugin, installed the way a vendor's package would be.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e examples/heli-target-opencl
	@touch $(STAMP)

venv: $(STAMP)

# System tools the tests use: Verilator lints the NPU's generated Verilog,
# PoCL is the CPU OpenCL driver of examples/heli-target-opencl (Debian's
# packages; we run as root). Quiet, and a no-op once installed.
tools:
	@command -v verilator >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq verilator >/dev/null)
	@command -v yosys >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yosys >/dev/null)
	@dpkg -s pocl-opencl-icd >/dev/null 2>&1 || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pocl-opencl-icd >/dev/null)

demo: $(STAMP)
	$(PY) examples/demo.py --target ref

# One BLAS thread per pytest worker: JOBS workers already fill the cores, and
# oversubscribed OpenBLAS threads stall for tens of milliseconds.
test: $(STAMP) tools
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) -q

# The cpu target's real-model tests (pytest marker `asan`) with every kernel
# built under AddressSanitizer (HELI_CPU_ASAN=1). Its runtime must be loaded
# before Python starts (LD_PRELOAD); CPython "leaks" at exit by design.
test-asan: $(STAMP)
	@asan="$$($(PY) -c 'from heli.targets.cpu._toolchain import asan_runtime; \
		print(asan_runtime())')" && echo "AddressSanitizer runtime: $$asan" && \
	HELI_CPU_ASAN=1 ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$$asan" OPENBLAS_NUM_THREADS=1 \
		$(PY) -m pytest -q -p no:cacheprovider -m asan tests/targets/cpu

lint: $(STAMP)
	$(VENV)/bin/ruff check heli tests examples scripts bench

conformance: $(STAMP)
	$(VENV)/bin/heli conformance --target ref --compare onnxruntime

# docs/scorecards/: `heli conformance --report` for ref, cpu, npu and opencl,
# plus the `heli targets` listing (about 10 minutes).
scorecards: $(STAMP) tools
	$(PY) scripts/scorecards.py docs/scorecards

# Re-pin every package from the current .venv.
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^heli' > requirements/lock.txt

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
