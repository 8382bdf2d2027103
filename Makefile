# ZipML on FPGA. `make demo` and `make test` work on a fresh machine with Python 3.11+, g++, make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Tool caches live inside the checkout (ignored by git) so one CI run warms them once.
export YOWASP_CACHE_DIR := $(CURDIR)/.cache/yowasp
export MPLBACKEND := Agg

BOARD ?= icebreaker

.PHONY: venv demo test lint bench bitstreams program clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/zipml demo

lint: $(STAMP)
	$(VENV)/bin/ruff check zipml hw sim host tests

test: $(STAMP) lint
	$(PY) -m pytest -n 2 -q -ra

bench: $(STAMP)
	$(VENV)/bin/zipml bench --out results

# The ULX3S W = 64 bitstream is nextpnr seed 4 (seeds 1-3 at ed142ef: no route, 71.1 and
# 71.9 MHz against 71.875), the W = 128 one seed 3 (seed 2 stalled in router2):
# docs/PIPELINE.md, "The clock of the ULX3S trainers".
bitstreams: $(STAMP)
	$(VENV)/bin/zipml build --board icebreaker
	$(VENV)/bin/zipml build --board ulx3s-85f --seed 4
	$(VENV)/bin/zipml build --board ulx3s-85f-w128 --seed 3

program: $(STAMP)
	$(VENV)/bin/zipml program --board $(BOARD)

clean:
	rm -rf build sim_build .pytest_cache
