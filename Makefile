# One-command set-up: `make demo` and `make test` create .venv if missing,
# install astrodask and its test dependencies into it, then run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.astrodask-installed

.PHONY: demo test install clean

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

# The notebooks run too (nbmake), on small fields.
test: $(STAMP)
	ASTRODASK_NOTEBOOK_SIZE=256 MPLBACKEND=agg $(BIN)/python -m pytest -q tests --nbmake notebooks

clean:
	rm -rf $(VENV) demo-output bench-output
