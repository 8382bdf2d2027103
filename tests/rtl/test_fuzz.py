"""Protocol fuzzing of the device core in Verilator against the Python protocol device (see
``fuzz_tb``): at least 10,000 random and mutated frames, counted by category and printed.

The core is the virtual board's build (:func:`zipml.sim.virtual_board.build`, cached in
``build/virtual_board``), so this test and ``test_virtual_board`` share one compile. Set
``FUZZ_FRAMES`` / ``FUZZ_SEED`` to fuzz longer or elsewhere.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from zipml.sim.runner import ROOT, build_dir_for, simulator_available
from zipml.sim.virtual_board import build, device_parameters

PARAMS = dict(width=32, n_max=16, memory_words=512, max_payload=256, batch_max=8)
FRAMES = int(os.environ.get("FUZZ_FRAMES", 10_000))

pytestmark = pytest.mark.skipif(not simulator_available("verilator"),
                                reason="verilator not installed")


def test_fuzz(request):
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    assert FRAMES >= 10_000 or "FUZZ_FRAMES" in os.environ
    build_dir = build(**PARAMS)
    device = device_parameters(**PARAMS)
    out = build_dir_for(request)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "fuzz.json"
    report.unlink(missing_ok=True)
    env = {"WIDTH": device["width"], "N_MAX": device["n_max"],
           "MEMORY_WORDS": device["memory_words"], "MAX_PAYLOAD": device["max_payload"],
           "BATCH_MAX": device["batch_max"], "BUILD_ID": device["build_id"],
           "CLK_FREQ": int(device["clk_freq"]), "TIMEOUT_CYCLES": device["timeout_cycles"],
           "FUZZ_FRAMES": FRAMES,
           "FUZZ_REPORT": report}
    test_dir = str(ROOT / "tests" / "rtl")
    sys.path.insert(0, test_dir)      # the runner passes sys.path to the simulator
    start = time.monotonic()
    try:
        results = get_runner("verilator").test(
            test_module="fuzz_tb", hdl_toplevel="top", hdl_toplevel_lang="verilog",
            build_dir=build_dir, test_dir=out,
            extra_env={k: str(v) for k, v in env.items()}, timescale=("1ns", "1ps"),
            results_xml=str(out / "results.xml"))
    except SystemExit as exc:
        raise AssertionError(f"the fuzz simulation failed: exit {exc.code}; see {out}") from None
    finally:
        sys.path.remove(test_dir)
    tests, failed = get_results(Path(results))
    assert tests == 1 and not failed, f"fuzz failed; see {out}"
    counts = json.loads(report.read_text())
    assert sum(counts["by_category"].values()) == FRAMES
    assert all(counts["by_category"].values())
    print(f"\nfuzzed {FRAMES} cases in {time.monotonic() - start:.0f} s: "
          + ", ".join(f"{k} {v}" for k, v in counts["by_category"].items())
          + f"; {counts['timeouts']} frame timeouts; responses by status {counts['statuses']}; "
          f"{counts['model_checks']} model read-backs")
