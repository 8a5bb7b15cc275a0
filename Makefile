# One-command set-up: `make demo` and `make test` create .venv if missing,
# install astrodask and its test dependencies into it, then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.astrodask-installed

.PHONY: demo test docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install whenever the package metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/astrodask demo --out demo-output

# The notebooks run too (nbmake), on small fields; tests/test_docs.py builds the docs
# (mkdocs build --strict into a temporary folder) and runs every documented example.
# Two pytest processes (pytest-xdist), each test file in one of them so that its
# module fixtures are built once: much of a test's time is start-up (imports, model
# loading, clusters) that leaves a core idle. 2 cores: 23 -> 15.5 min.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	ASTRODASK_NOTEBOOK_SIZE=256 MPLBACKEND=agg $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) \
		--dist loadfile tests --nbmake notebooks

# The documentation site into site/; warnings are errors (tests/test_docs.py builds it too).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=. $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo-output bench-output site
