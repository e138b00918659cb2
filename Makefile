# The two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the CPU build where no NVIDIA GPU is found, the CUDA build where one is
# (scripts/torch_install.py says which and why). TORCH_BUILD=cpu or cuda chooses instead;
# TORCH_INDEX_URL installs torch from that wheel index, as it is.
TORCH_SPEC ?= torch==2.13.0
TORCH_BUILD ?= auto
TORCH_INDEX_URL ?=
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_SPEC)-$(TORCH_BUILD)-$(TORCH_INDEX_URL)" | tr -c 'a-zA-Z0-9.\n' _)
DEV_STAMP := $(STAMP)-dev
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test test-browser test-docker test-replicas lint typecheck unit format clean

$(STAMP): pyproject.toml scripts/torch_install.py
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "lstm-serve needs Python 3.11 or newer; run e.g. make $(MAKECMDGOALS) PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python scripts/torch_install.py --spec "$(TORCH_SPEC)" --build "$(TORCH_BUILD)" --index-url "$(TORCH_INDEX_URL)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# make serve needs only the above; the tests, the linters and training's plots need the dev tools
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(DEV_STAMP)

# tcmalloc when the system has it (Debian: libtcmalloc-minimal4): memory stays flat under mixed load
TCMALLOC ?= $(firstword $(wildcard /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))

serve: $(STAMP)
	$(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC) )$(BIN)/python -m service --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

unit: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "not browser"

test: lint typecheck unit

# The playground page in headless Chromium against a real server; installs Chromium if missing.
test-browser: $(DEV_STAMP)
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest tests/browser -m browser -p no:cacheprovider

# Needs a Docker engine with Compose v2: builds the image, runs it, calls every endpoint.
test-docker:
	bash scripts/test-docker.sh

# Needs the same: 2 replicas behind HAProxy (deploy/compose/replicas.yml), load, a replica stopped.
test-replicas:
	bash scripts/test-replicas.sh

format: $(DEV_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
