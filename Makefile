# The two commands a fresh clone needs: `make demo` runs the main job, `make test` runs the test suite.
# Both create a virtual environment in $(VENV) on first use and install the plugin into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUTPUT ?= demo_output

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

demo: install
	$(BIN)/nnunet-resenc demo --output $(DEMO_OUTPUT)

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUTPUT)
