# fva: every target that needs the environment depends on `install`, so a fresh clone needs only
# `make test` and `make submission`.
#
# The environment is the committed lock, requirements.lock: every package of the tree at an exact version
# with its hashes, resolved for Linux x86_64 and Python $(LOCK_PYTHON). `make install` installs exactly
# that (pip, hash-checked, no dependency resolution) and is skipped while the lock and pyproject.toml are
# older than the stamp; `make lock` re-resolves it from pyproject.toml's ranges (keeping the current pins
# where they still fit; `make lock UPGRADE=1` takes the newest releases instead).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
LOCK_PYTHON   := 3.11
LOCK_PLATFORM := x86_64-manylinux_2_28
UV_VERSION    := 0.13.9
TOOLS  := .venv-lock

# make submission DATASET=mavceleb-v3 ROOT=/data/mavceleb_v3   (default: the generated demo dataset;
# DATASET=demo-v4: the generated FLAG 2027 demo, DATASET=mavceleb-v4 ROOT=...: the FLAG download)
DATASET ?= demo
ROOT    ?=
WORK    ?= work/$(DATASET)

.PHONY: install lock test test-all demo-data submission bench clean distclean

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import platform, sys; v = "%d.%d" % sys.version_info[:2]; \
	  v == "$(LOCK_PYTHON)" and sys.platform == "linux" and platform.machine() == "x86_64" or sys.exit( \
	  f"$(LOCK) is for Python $(LOCK_PYTHON) on Linux x86_64, $(VENV) has Python {v} on {sys.platform} " \
	  f"{platform.machine()}: run make distclean, then make PYTHON=python$(LOCK_PYTHON) ...")'
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

lock:  ## re-resolve requirements.lock from pyproject.toml (UPGRADE=1: newest releases)
	@test -x $(TOOLS)/bin/uv || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	echo pip | $(TOOLS)/bin/uv pip compile pyproject.toml - --extra test --generate-hashes --quiet \
	  --python-version $(LOCK_PYTHON) --python-platform $(LOCK_PLATFORM) --custom-compile-command 'make lock' \
	  $(if $(UPGRADE),--upgrade) --output-file $(LOCK)

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
	rm -rf work data/demo data/demo-v4 data/demo-checkpoints submission.zip submission.zip.levels.json .pytest_cache bench/results

distclean: clean
	rm -rf $(VENV) $(TOOLS) *.egg-info
