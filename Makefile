# Two entry points: `make report` and `make test`. Both create .venv and install
# the project, its extras and the Jupyter kernel on first use; later runs skip that.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sprint2-installed
KERNEL := sprint2
ARGS   ?=

.PHONY: install report report-quick lint format test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask,qat]'
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (sprint2)"
	@touch $@

report: $(STAMP)
	$(BIN)/sprint2 report --out reports $(ARGS)

report-quick: $(STAMP)
	$(BIN)/sprint2 report --quick --out reports $(ARGS)

# Style is checked by ruff (settings in pyproject.toml); `make format` applies it.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf reports .pytest_cache
