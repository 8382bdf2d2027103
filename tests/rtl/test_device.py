"""The device top under cocotb over its UART at 3 Mbaud, every response checked against the
Python protocol device (see ``device_tb``). One build per hardware configuration; the cocotb
tests inside share it.

Run with ``WAVES=1`` to keep waveforms in ``build/<test id>``.
"""


import pytest

from zipml.hw.device import Device
from zipml.sim.runner import build_and_test, build_dir_for, up5k_models

CLK_FREQ = 12_000_000
BAUD = 3_000_000
TIMEOUT_S = 200e-6          # frame timeout: short, so that tests pause briefly


@pytest.mark.parametrize(
    "width, n_max, memory_words, max_payload, lanes, dsp, serial, spram, tests", [
        (32, 16, 128, 256, None, False, False, False, None),
        # a build that refuses the narrowest fields, multiplying on hard multipliers (as ULX3S)
        (32, 16, 128, 256, 8, True, False, False, ["commands_and_refusals", "streamed_training"]),
        # W = 64 with 16 lanes (as ULX3S): a word of more fields goes through in parts
        (64, 32, 128, 256, 16, 8, False, False, ["streamed_training", "resident_training"]),
        # the lane-serial pipeline, resident data in SPRAM (as iCEBreaker; the toolchain's model
        # of the SPRAM block)
        (32, 16, 16384, 256, None, False, True, True, None),
    ])
def test_device(request, width, n_max, memory_words, max_payload, lanes, dsp, serial, spram,
                tests):
    top = Device(width, n_max, memory_words, clk_freq=CLK_FREQ, baud=BAUD,
                 max_payload=max_payload, batch_max=8, build_id=0x1234, rx_timeout=TIMEOUT_S,
                 lanes=lanes, dsp=dsp, serial=serial, spram=spram)
    build_dir = build_dir_for(request)
    sources = up5k_models(build_dir) if spram else []
    build_and_test(top, "device_tb", build_dir, testcase=tests, sources=sources, env={
        "CLK_FREQ": CLK_FREQ, "BAUD": BAUD, "WIDTH": width, "N_MAX": n_max,
        "MEMORY_WORDS": memory_words, "MAX_PAYLOAD": max_payload, "BATCH_MAX": 8,
        "BUILD_ID": 0x1234, "TIMEOUT_CYCLES": top.core.timeout_cycles,
        "LANES": top.core.lanes, "SERIAL": int(serial),
    })
