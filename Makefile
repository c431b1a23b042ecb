# Two entry points: `make report` and `make test`. Both create .venv and install
# the project, its extras and the Jupyter kernel on first use; later runs skip that.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sprint2-installed
KERNEL := sprint2
ARGS   ?=
# pytest-xdist processes for `make test`; each file runs whole in one of them
TEST_WORKERS ?= 2

.PHONY: install report report-quick lint format test test-fast clean

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

# The whole suite, quick-mode notebooks included, the longest files first (tests/conftest.py);
# --durations lists the slowest tests at the end, where the time of the suite goes.
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 $(ARGS)

# The inner loop: every test not marked slow (no training runs, conversions or notebooks), about two minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

clean:
	rm -rf reports .pytest_cache
