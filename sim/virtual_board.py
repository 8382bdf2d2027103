"""The virtual board: the device's gateware simulated in Verilator behind a TCP port.

``socket://127.0.0.1:PORT`` then behaves like the board's serial port for pyserial and
:class:`zipml.host.transport.SerialTransport`: the same frames, the same answers, computed by
the same gateware (:class:`zipml.hw.device.DeviceCore`).

The bridge works at the byte-stream level: bytes from the socket drive the core's frame
receiver input one per clock cycle and the frame transmitter's output is read one byte per
cycle, :class:`ChunkedCore` moving them :data:`CHUNK` bytes per simulator callback. The UART
PHY is bypassed (it is tested on its own, and inside :class:`~zipml.hw.device.Device` by
``tests/rtl/test_device.py``): bit-level UART models cost ten simulator callbacks per byte and
direction, which measured a few hundred bytes per second, against kilobytes per second here.
IDENTIFY therefore reports ``baud = 0`` (a link that is not a UART).

Simulated time runs only as fast as the simulator: after traffic the bridge advances the clock
in short steps and polls the socket between them; when the line has been quiet for a while it
waits for the socket in longer, blocking polls so an idle board costs little CPU.

Use :func:`start_virtual_board` / :func:`stop` from Python (``zipml serve-sim`` calls them), or
``python -m zipml.sim.virtual_board --port P``. The Verilator build is cached in
``build/virtual_board/<key>``, keyed by the parameters and the gateware sources, so only the
first start of a configuration compiles (minutes); later starts take seconds.
"""

import argparse
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from zipml.sim.runner import ROOT, sim_env, up5k_models, verilator_makeflags

__all__ = ["DEFAULTS", "CHUNK", "ChunkedCore", "make_core", "device_parameters", "build", "serve",
           "start_virtual_board", "stop", "main", "put_chunks", "take_chunks"]

#: Default parameters of the simulated device.
DEFAULTS = dict(width=64, n_max=64, memory_words=4096, max_payload=1024, batch_max=256,
                clk_freq=12_000_000, build_id=0x5157, lanes=None, tables=True, dsp=False,
                mul_stages=1, serial=False, spram=False)

#: Sources whose text determines the generated Verilog (besides the parameters).
_SOURCES = ("hw/device.py", "hw/resident.py", "hw/pipeline.py", "hw/serial.py", "hw/lanes.py",
            "hw/scalar.py", "hw/framing.py", "hw/uart.py", "zipml/contract.py",
            "zipml/protocol.py", "sim/timing.py")

#: The core's frame timeout in simulated seconds. A socket may deliver a frame in pieces with
#: simulated time running in between, so it is longer than a board's.
_RX_TIMEOUT = 0.05

#: Bytes moved per simulator callback in each direction.
CHUNK = 32

_FAST_STEP = 128          # cycles between polls after traffic
_SLOW_STEP = 2048         # cycles between blocking polls on a quiet line
_FAST_POLLS = 400         # polls without traffic before the bridge slows down
_SLOW_WAIT = 0.02         # seconds a quiet poll may block


def _params(params):
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown virtual board parameters: {sorted(unknown)}")
    return {**DEFAULTS, **params}


class ChunkedCore(wiring.Component):
    """A :class:`~zipml.hw.device.DeviceCore` whose byte streams are moved :data:`CHUNK` bytes
    at a time, so the bridge pays one simulator callback per chunk instead of per byte.

    Input: a chunk of ``i_count`` bytes (first byte in the low bits) is taken when the previous
    one has gone into the core, one byte per cycle. Output: bytes from the core gather in a
    chunk, offered when it is full or when the core has no byte to give.

    Parameters
    ----------
    core : DeviceCore

    Members
    -------
    i_data : In(8 * CHUNK)
    i_count : In(range(CHUNK + 1))
    i_valid : In(1)
    i_ready : Out(1)
    o_data : Out(8 * CHUNK)
    o_count : Out(range(CHUNK + 1))
    o_valid : Out(1)
    o_ready : In(1)
    """

    def __init__(self, core):
        self.core = core
        super().__init__({
            "i_data": In(8 * CHUNK), "i_count": In(range(CHUNK + 1)), "i_valid": In(1),
            "i_ready": Out(1),
            "o_data": Out(8 * CHUNK), "o_count": Out(range(CHUNK + 1)), "o_valid": Out(1),
            "o_ready": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        ibuf = Signal(8 * CHUNK)
        ileft = Signal(range(CHUNK + 1))
        m.d.comb += [self.i_ready.eq(ileft == 0), core.i_stream.valid.eq(ileft != 0),
                     core.i_stream.payload.eq(ibuf[:8])]
        with m.If(self.i_valid & self.i_ready):
            m.d.sync += [ibuf.eq(self.i_data), ileft.eq(self.i_count)]
        with m.Elif(core.i_stream.valid & core.i_stream.ready):
            m.d.sync += [ibuf.eq(ibuf >> 8), ileft.eq(ileft - 1)]

        m.d.comb += core.o_stream.ready.eq(~self.o_valid & (self.o_count != CHUNK))
        with m.If(self.o_valid):
            with m.If(self.o_ready):
                m.d.sync += [self.o_valid.eq(0), self.o_count.eq(0)]
        with m.Elif(core.o_stream.valid & core.o_stream.ready):
            m.d.sync += [self.o_data.word_select(self.o_count, 8).eq(core.o_stream.payload),
                         self.o_count.eq(self.o_count + 1)]
        with m.Elif(self.o_count != 0):
            m.d.sync += self.o_valid.eq(1)
        return m


def make_core(**params):
    """The simulated top: a :class:`ChunkedCore` around the device's
    :class:`~zipml.hw.device.DeviceCore` (parameters: :data:`DEFAULTS`)."""
    from zipml.hw.device import DeviceCore
    p = _params(params)
    return ChunkedCore(DeviceCore(
        p["width"], p["n_max"], p["memory_words"], clk_freq=p["clk_freq"], baud=0,
        max_payload=p["max_payload"], batch_max=p["batch_max"], build_id=p["build_id"],
        rx_timeout=_RX_TIMEOUT, lanes=p["lanes"], tables=p["tables"], dsp=p["dsp"],
        mul_stages=p["mul_stages"], serial=p["serial"], spram=p["spram"]))


def device_parameters(**params):
    """The simulated device's parameters (:data:`DEFAULTS` updated with ``params``) and its
    frame timeout in cycles (``timeout_cycles``), without building it."""
    from zipml.hw.device import frame_timeout_cycles
    p = _params(params)
    return dict(p, timeout_cycles=frame_timeout_cycles(_RX_TIMEOUT, p["clk_freq"]))


def _key(params):
    import amaranth
    h = hashlib.sha256(json.dumps(_params(params), sort_keys=True).encode())
    h.update(amaranth.__version__.encode())
    import inspect
    h.update(inspect.getsource(ChunkedCore).encode())
    for name in _SOURCES:
        path = ROOT / name
        h.update(name.encode())
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()[:16]


def build(**params):
    """Build (or find in the cache) the simulator of the device; return its build folder."""
    sim_env()
    build_dir = ROOT / "build" / "virtual_board" / _key(params)
    if (build_dir / "top").exists():
        return build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may ask for the same build: one compiles, the others wait for it.
    with open(build_dir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (build_dir / "top").exists():
            _build(build_dir, params)
    return build_dir


def _build(build_dir, params):
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner
    source = build_dir / "top.v"
    source.write_text(verilog.convert(make_core(**params), name="top"))
    sim_env()
    os.environ["MAKEFLAGS"] = verilator_makeflags("-O2")
    runner = get_runner("verilator")
    # the iCE40UP5K's SPRAM and multiplier blocks, from the toolchain's models of them
    models = up5k_models(build_dir) if params.get("spram") else []
    runner.build(sources=[source, *models], hdl_toplevel="top", build_dir=build_dir,
                 build_args=["-Wno-fatal"], always=True, timescale=("1ns", "1ps"))


def serve(port=0, *, host="127.0.0.1", once=False, ready_file=None, watch_pid=None, **params):
    """Build if needed, then simulate the device serving ``host:port`` until SIGTERM (or, with
    ``once``, until the first client disconnects). Blocks; see :func:`start_virtual_board`.

    Parameters
    ----------
    port : int
        TCP port; 0 picks a free one (written to ``ready_file``).
    once : bool
        Stop when the first client disconnects.
    ready_file : str or Path, optional
        Written (JSON: ``port``, ``pid``) once the simulation listens.
    watch_pid : int, optional
        Stop when this process ends (:func:`start_virtual_board` passes its own: a board
        outlives no launcher that was killed before it could stop it).
    **params
        :data:`DEFAULTS` to override.
    """
    from cocotb_tools.runner import get_runner
    p = _params(params)
    build_dir = build(**p)
    runner = get_runner("verilator")
    env = {"VB_HOST": host, "VB_PORT": port, "VB_ONCE": int(once),
           "VB_READY_FILE": ready_file or "", "VB_CLK_FREQ": p["clk_freq"],
           "VB_WATCH_PID": watch_pid or 0}
    runner.test(test_module="zipml.sim.virtual_board", hdl_toplevel="top",
                hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=build_dir,
                extra_env={k: str(v) for k, v in env.items()}, timescale=("1ns", "1ps"),
                results_xml=str(build_dir / "results.xml"))


def start_virtual_board(port=0, *, host="127.0.0.1", once=False, timeout=1800, log=None,
                        **params):
    """Start the virtual board in a subprocess; return ``(proc, port)`` once it listens.

    ``socket://HOST:PORT`` is then the board's serial port. Stop it with :func:`stop`.

    Parameters
    ----------
    port : int
        0 picks a free port.
    once : bool
        The board stops when its first client disconnects.
    timeout : float
        Seconds to wait for it to listen (the first start of a configuration compiles).
    log : str or Path, optional
        The simulator's output; default ``build/virtual_board/serve-<pid>.log``.
    **params
        :data:`DEFAULTS` to override (``width``, ``n_max``, ``memory_words``, ...).
    """
    p = _params(params)
    folder = ROOT / "build" / "virtual_board"
    folder.mkdir(parents=True, exist_ok=True)
    fd, ready = tempfile.mkstemp(prefix="ready-", suffix=".json", dir=folder)
    os.close(fd)
    os.unlink(ready)
    cmd = [sys.executable, "-m", "zipml.sim.virtual_board", "--port", str(port),
           "--host", host, "--ready-file", ready, "--params", json.dumps(p),
           "--watch-pid", str(os.getpid())]
    if once:
        cmd.append("--once")
    log_path = Path(log) if log else folder / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
    proc.log = log_path
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(ready):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the virtual board exited ({proc.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the virtual board did not listen within {timeout} s "
                                   f"(see {log_path})")
            time.sleep(0.05)
        time.sleep(0.01)
        info = json.loads(Path(ready).read_text())
    except BaseException:
        stop(proc)
        raise
    finally:
        if os.path.exists(ready):
            os.unlink(ready)
    return proc, info["port"]


def stop(proc, timeout=10.0):
    """Stop a board from :func:`start_virtual_board`: SIGTERM to its process group (the
    simulation closes its sockets and ends), SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return proc.wait()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def main(argv=None):
    """``python -m zipml.sim.virtual_board``: serve the device on a TCP port."""
    ap = argparse.ArgumentParser(prog="python -m zipml.sim.virtual_board",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--once", action="store_true", help="stop when the client disconnects")
    ap.add_argument("--ready-file")
    ap.add_argument("--params", default="{}", help="JSON object of parameters")
    ap.add_argument("--watch-pid", type=int, help="stop when this process ends")
    for name in DEFAULTS:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    for name in DEFAULTS:
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    # Keep running until the simulation ends; the simulator gets the signal too and closes.
    signal.signal(signal.SIGTERM, lambda *_: None)
    serve(args.port, host=args.host, once=args.once, ready_file=args.ready_file,
          watch_pid=args.watch_pid, **params)


# --- the bridge, run by cocotb inside the simulator ---------------------------------------------

try:
    import cocotb
except ImportError:          # pragma: no cover
    cocotb = None

if cocotb is not None:
    @cocotb.test()
    async def virtual_board(dut):
        """Bridge a TCP socket to the core's byte streams until SIGTERM (or a disconnect)."""
        await _Bridge(dut).run()


class _Bridge:
    def __init__(self, dut):
        self.dut = dut
        self.stop = False
        self.once = os.environ.get("VB_ONCE", "0") == "1"
        self.watch_pid = int(os.environ.get("VB_WATCH_PID") or 0)
        self.period_ps = 2 * round(1e12 / int(os.environ["VB_CLK_FREQ"]) / 2)

    def _on_signal(self, *_):
        self.stop = True

    def _launcher_gone(self):
        """The process that started the board has ended (then the board stops)."""
        if self.watch_pid:
            try:
                os.kill(self.watch_pid, 0)
            except ProcessLookupError:
                self.stop = True
            except PermissionError:
                pass
        return self.stop

    async def run(self):
        from cocotb.clock import Clock
        from cocotb.triggers import ClockCycles

        dut = self.dut
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        listener = socket.create_server((os.environ["VB_HOST"], int(os.environ["VB_PORT"])))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        cocotb.start_soon(Clock(dut.clk, self.period_ps, unit="ps").start())
        dut.i_valid.value = 0
        dut.o_ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4)
        ready = os.environ.get("VB_READY_FILE")
        if ready:
            tmp = ready + ".tmp"
            Path(tmp).write_text(json.dumps({"port": port, "pid": os.getpid()}))
            os.replace(tmp, ready)
        dut._log.info("virtual board listening on %s:%d", os.environ["VB_HOST"], port)
        try:
            while not self._launcher_gone():
                r, _, _ = select.select([listener], [], [], 0.1)
                if not r:
                    continue
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                dut._log.info("client connected")
                await self._serve(conn)
                dut._log.info("client disconnected")
                if self.once:
                    break
        finally:
            listener.close()

    async def _serve(self, conn):
        from cocotb.triggers import Timer
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        quiet = 0
        try:
            while not self.stop:
                out = await self._drain()
                if out:
                    conn.setblocking(True)
                    try:
                        conn.sendall(out)
                    except OSError:
                        return
                    conn.setblocking(False)
                    quiet = 0
                wait = 0 if quiet < _FAST_POLLS else _SLOW_WAIT
                r, _, _ = select.select([conn], [], [], wait)
                if r:
                    try:
                        data = conn.recv(1 << 16)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        return
                    if data == b"":
                        return
                    if data:
                        await self._feed(data)
                        quiet = 0
                        continue
                quiet += 1
                if quiet >= _FAST_POLLS and self._launcher_gone():
                    return
                step = _FAST_STEP if quiet < _FAST_POLLS else _SLOW_STEP
                await Timer(step * self.period_ps, "ps")
        finally:
            conn.close()

    async def _feed(self, data):
        """Request bytes into the core, a chunk per callback (the core takes one a cycle)."""
        await put_chunks(self.dut, data, self.period_ps)

    async def _drain(self):
        """Response bytes the core has ready, a chunk per callback."""
        return await take_chunks(self.dut, self.period_ps)


async def put_chunks(dut, data, period_ps, chunk=CHUNK, gap=0, after_chunk=None):
    """Drive ``data`` into a :class:`ChunkedCore`'s input, ``chunk`` bytes per transfer, then
    wait while the core takes them (one a cycle) plus ``gap`` cycles; ``after_chunk`` (an async
    callable) runs after each transfer."""
    from cocotb.triggers import FallingEdge, Timer
    await FallingEdge(dut.clk)
    for pos in range(0, len(data), chunk):
        part = data[pos:pos + chunk]
        while not dut.i_ready.value:
            await FallingEdge(dut.clk)
        dut.i_data.value = int.from_bytes(part, "little")
        dut.i_count.value = len(part)
        dut.i_valid.value = 1
        # A Timer, not FallingEdge: awaiting an edge from an edge callback can return at once.
        await Timer(period_ps, "ps")
        dut.i_valid.value = 0
        await Timer((len(part) + gap) * period_ps, "ps")
        if after_chunk is not None:
            await after_chunk()


async def take_chunks(dut, period_ps):
    """The response bytes a :class:`ChunkedCore` has ready, a chunk per transfer."""
    from cocotb.triggers import FallingEdge, Timer
    out = bytearray()
    await FallingEdge(dut.clk)
    while dut.o_valid.value:
        count = int(dut.o_count.value)
        out += int(dut.o_data.value).to_bytes(CHUNK, "little")[:count]
        dut.o_ready.value = 1
        await Timer(period_ps, "ps")
        dut.o_ready.value = 0
        await Timer(CHUNK * period_ps, "ps")
    return bytes(out)


if __name__ == "__main__":
    main()
