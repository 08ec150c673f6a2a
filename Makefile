# The two commands of the README:
#   make demo   set up (once), run the steering demo (studies/demo.toml) on the CPU with the steering app on it
#   make test   set up with the test tools (once) and run the test suite (the PostgreSQL
#               tests run when $STEER_TEST_PG_URL names a server, and skip saying so otherwise)
#   make test-pg the same with a throwaway PostgreSQL server (tests/pg.sh; needs Debian's
#               `postgresql` package, which .ci/run installs)
# Each sets up a virtual environment in .venv idempotently, one stamp file per level:
#   setup       torch and steer, what the demo needs               .venv/.steer-installed
#   setup-test  setup plus the test tools: pytest, playwright, psycopg  .venv/.steer-test-installed

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# Without an NVIDIA GPU take PyTorch's CPU build: a bare `torch` pulls a multi-GB CUDA build.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_VERSION ?= 2.13.0

.PHONY: setup setup-test browser demo test test-pg fuzz gpu-check clean

setup: $(VENV)/.steer-installed

setup-test: $(VENV)/.steer-test-installed

$(VENV)/.steer-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then echo "NVIDIA GPU found: installing torch with CUDA"; $(PIP) install "torch>=2.4"; \
	else echo "no NVIDIA GPU: installing the CPU build of torch"; \
	  $(PIP) install --timeout 15 --retries 1 "torch==$(TORCH_CPU_VERSION)" --extra-index-url $(TORCH_CPU_INDEX); fi
	$(PIP) install -e .
	touch $@

$(VENV)/.steer-test-installed: $(VENV)/.steer-installed
	$(PIP) install -e ".[test]"
	touch $@

# Two workers on the demo study (trials of about two minutes, for a person to steer) and the steering app
# at http://127.0.0.1:8050/ (Ctrl-C stops it all).
demo: setup
	$(VENV)/bin/steer run studies/demo.toml --workers 2 --dash

# Browser tests drive Debian's Chromium (a test tool's own browser download does not work offline).
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium not found: the browser tests will be skipped (sudo apt-get install chromium)"; fi

# Two test processes (pytest-xdist), a test file each at a time: most tests wait on workers, a browser or a
# database, so two run in about 9.5 minutes what one runs in 14.5 on a 2-core machine like CI's. Each test
# has its own folder and PostgreSQL database, and module fixtures stay in one process (--dist loadfile: by hand,
# `-n 2` alone splits a file, and test_dash_browser.py's tests, which steer one shared study in order, then fail).
# Not in pyproject's addopts: the GPU machine's pytest has no xdist.
PYTEST = $(PY) -m pytest -q -n 2 --dist loadfile

test: setup-test browser
	$(PYTEST)

test-pg: setup-test
	eval "$$(tests/pg.sh start)" && trap 'tests/pg.sh stop' EXIT && STEER_TEST_PG_REQUIRED=1 $(PYTEST)

# The fuzz tests with twenty times CI's examples, drawn at random (CI's are fixed), on SQLite and a throwaway
# PostgreSQL server, with Hypothesis's statistics per entry point (docs/fuzzing.md): before a release.
fuzz: setup-test
	eval "$$(tests/pg.sh start)" && trap 'tests/pg.sh stop' EXIT && STEER_TEST_PG_REQUIRED=1 STEER_FUZZ_SCALE=20 \
	  $(PY) -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics -p no:cacheprovider

# Everything that needs an NVIDIA GPU in one command: the compiled-kernel tests, the benchmark at the
# goal's size, the precision measurement, a short study on the triton backend steered once, the sweep.
# Logs and figures go to $$OUT (default ./gpu-check). Needs the project installed (make setup-test).
gpu-check:
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tests/gpu_check.sh

clean:
	rm -rf $(VENV) studies/*.db studies/*.db-* studies/*-artifacts
