# fva: every target that needs the environment depends on `install`, so a fresh clone needs only
# `make test` and `make submission`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

# make submission DATASET=mavceleb-v3 ROOT=/data/mavceleb_v3   (default: the generated demo dataset)
DATASET ?= demo
ROOT    ?=
WORK    ?= work/$(DATASET)

.PHONY: install test test-all demo-data submission bench clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-all: install  ## also the slow tests
	$(BIN)/python -m pytest -q -m 'not gpu'

demo-data: install
	@if [ -d data/demo ]; then echo "data/demo exists; 'make clean' to regenerate"; \
	else $(BIN)/fva demo-data --out data/demo; fi

submission: install
	PATH="$(CURDIR)/$(BIN):$$PATH" DATASET="$(DATASET)" ROOT="$(ROOT)" WORK="$(WORK)" bash scripts/submission.sh

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf work data/demo data/demo-checkpoints submission.zip .pytest_cache bench/results

distclean: clean
	rm -rf $(VENV) *.egg-info
