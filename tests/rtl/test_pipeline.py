"""The SGD pipeline under cocotb, bit-exact against the golden model. Each hardware build
(W, n_max) is made once and runs many run-time configurations in one simulation (the suites of
``pipeline_tb.cases``: every format, batches and delay, saturation, the double-sampling
statistics).

Run with ``WAVES=1`` to keep waveforms in ``build/<test id>``.
"""


import pytest

from zipml.hw.serial import make_trainer
from zipml.sim.runner import build_and_test, build_dir_for, simulator_available

NO_ICARUS = pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")


def run(request, width, n_max, suites, sim="verilator", seed=1, lanes=None, dsp=False,
        mul_stages=1, serial=False):
    dut = make_trainer(width, n_max, serial=serial, lanes=lanes, dsp=dsp, mul_stages=mul_stages)
    build_and_test(dut, "pipeline_tb", build_dir_for(request), sim=sim, opt_fast="-O0",
                   env={"WIDTH": width, "N_MAX": n_max, "LANES": dut.lanes,
                        "MUL_STAGES": mul_stages, "SERIAL": int(serial),
                        "SUITES": ",".join(suites), "SEED": seed})


@pytest.mark.parametrize("width, n_max, suites", [
    (32, 128, ["formats", "batches", "stats"]),
    (64, 128, ["formats", "saturate"]),
    (128, 128, ["formats", "batches", "saturate"]),
    (128, 1024, ["quick", "batches"]),
])
def test_pipeline(request, width, n_max, suites):
    run(request, width, n_max, suites, seed=width + n_max)


@pytest.mark.parametrize("width, n_max, lanes, dsp, mul_stages, suites", [
    (64, 256, 16, 8, 2, ["formats", "batches", "saturate"]),         # the ULX3S build
    (128, 256, 16, 8, 2, ["quick", "saturate"]),        # the ULX3S W = 128 build
    (128, 256, 32, 8, 2, ["quick", "saturate"]),        # W = 128 (places on the 85F, no route)
    (64, 128, 8, True, 1, ["quick", "saturate"]),
    (64, 128, 8, False, 2, ["quick", "batches"]),
])
def test_pipeline_fewer_lanes(request, width, n_max, lanes, dsp, mul_stages, suites):
    """Builds that take the narrowest fields' words in parts, multiply on hard multipliers and
    register the multipliers' inputs."""
    run(request, width, n_max, suites, seed=width + lanes, lanes=lanes, dsp=dsp,
        mul_stages=mul_stages)


@NO_ICARUS
def test_pipeline_icarus(request):
    run(request, 32, 64, ["quick"], sim="icarus", seed=5)


@pytest.mark.parametrize("width, n_max, suites", [
    (32, 256, ["formats", "batches", "saturate"]),        # the iCEBreaker build
    (64, 64, ["quick", "batches"]),
])
def test_serial_pipeline(request, width, n_max, suites):
    """The lane-serial pipeline: the same numbers, one field per cycle."""
    run(request, width, n_max, suites, seed=width + n_max + 7, serial=True)
