# precast: `make demo` shows it working, `make test` runs every check CI runs.
# Both do their own set-up on a fresh machine: a .venv with the Python
# dependencies, and (as root) the Debian packages the tests use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: all venv sysdeps mp32 lint typecheck typesheds test fuzz demo bench mutate ha docs clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(MAKE) --no-print-directory typesheds
	touch $@

# The firmware's typesheds (tools/fw_typeshed.py), one per port's stubs: built with the venv,
# so that a stub wheel is fetched at set-up, never while the tests run; rebuilt only when the
# stub packages change.
typesheds:
	$(BIN)/python tools/fw_typeshed.py build/fw-typeshed esp32
	$(BIN)/python tools/fw_typeshed.py build/fw-typeshed-rp2 rp2
	$(BIN)/python tools/fw_typeshed.py build/fw-typeshed-unix unix

venv: $(STAMP)

sysdeps:
	@sh tools/sysdeps.sh

# The 32-bit MicroPython unix port every firmware test also runs on (tools/mp32.sh): built once
# into build/mp32, again only when its source tarball changes (PRECAST_MP32_SRC names another).
mp32: sysdeps
	@sh tools/mp32.sh

lint: venv
	$(BIN)/ruff check host tests tools firmware
	$(BIN)/ruff format --check host tests tools

typecheck: venv
	$(BIN)/mypy
	@$(MAKE) --no-print-directory typesheds
	$(BIN)/mypy --config-file firmware/mypy.ini
	$(BIN)/mypy --config-file firmware/mypy-rp2.ini
	$(BIN)/mypy --config-file firmware/mypy-unix.ini

# Three workers, a test file each at a time (pytest-xdist): most tests wait on subprocesses,
# sockets and servers, so three share two cores well and the suite takes half the time.
PYTEST_WORKERS ?= 3

test: venv sysdeps mp32 lint typecheck
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The docs site (mkdocs-material) into site/: README is its front page, docs/ the rest.
# `make test` builds it too, strictly (tests/docs/test_docs_site.py): a broken link or anchor fails.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "the site is in site/ (open site/index.html, or: $(BIN)/mkdocs serve)"

# The property tests (pytest's `hypothesis` mark) with ten times the examples and fresh
# random seeds (tests/conftest.py's `fuzz` profile); on demand, not part of `make test`.
# A failure it finds becomes an explicit example in its test.
fuzz: venv
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -m hypothesis $(PYTEST_ARGS)

demo: venv
	$(BIN)/python tools/demo.py

bench: venv sysdeps
	$(BIN)/python tools/bench/run.py $(BENCH_ARGS)

# Named mutations of the firmware and the host code, each run against the tests that should
# catch it (tools/mutate.py); on demand, not part of `make test`.
mutate: venv sysdeps
	$(BIN)/python tools/mutate.py $(MUTATE_ARGS)

# A real Home Assistant (2024.3.3, in build/ha/venv, installed once) judges the MQTT
# discovery against a broker and a collector (tools/ha/run.py); on demand, not in `make test`.
ha: venv sysdeps
	$(PYTHON) tools/ha/install.py
	build/ha/venv/bin/python tools/ha/run.py $(HA_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build host/*.egg-info
