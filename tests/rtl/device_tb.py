"""cocotb tests of the device top (:class:`zipml.hw.device.Device`) over its UART.

Every request goes to the device through cocotbext-uart at the real baud and, byte for byte, to
:class:`zipml.sim.protocol_device.ProtocolDevice` built with the device's capabilities; the
decoded responses must agree. Two documented differences are masked: READ_STATUS's ``cycles``
(the device counts pipeline cycles) and, while the device trains resident epochs in the
background, the progress fields of the status polls (the Python device finishes RUN_EPOCHS at
once). Requests that only a busy device refuses are sent to the device alone.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotbext.uart import UartSink, UartSource

from zipml import contract, protocol
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.host.quantize import encode, encode_labels
from zipml.protocol import (
    FEND,
    FESC,
    Cmd,
    DeviceState,
    FrameDecoder,
    Status,
    encode_frame,
    pack_struct,
    unpack_struct,
)
from zipml.sim import timing
from zipml.sim.golden import GoldenDevice
from zipml.sim.protocol_device import ProtocolDevice

CLK_FREQ = int(os.environ.get("CLK_FREQ", 12_000_000))
BAUD = int(os.environ.get("BAUD", 3_000_000))
W = int(os.environ.get("WIDTH", 32))
N_MAX = int(os.environ.get("N_MAX", 16))
MEMORY_WORDS = int(os.environ.get("MEMORY_WORDS", 128))
MAX_PAYLOAD = int(os.environ.get("MAX_PAYLOAD", 256))
BATCH_MAX = int(os.environ.get("BATCH_MAX", 8))
BUILD_ID = int(os.environ.get("BUILD_ID", 0))
TIMEOUT_CYCLES = int(os.environ.get("TIMEOUT_CYCLES", 2400))
LANES = int(os.environ.get("LANES", W))
SERIAL = bool(int(os.environ.get("SERIAL", 0)))
BYTE_NS = 10 * 1e9 / BAUD
WB = W // 8


def configure_payload(n, rows, fmt=None, loss=Loss.SQUARED, lr=1 << 18, batch=1, delay=0,
                      decay=0, **override):
    fmt = Format() if fmt is None else fmt
    fields = dict(n_features=n, batch=batch, rows_per_epoch=rows, lr=lr,
                  encoding=fmt.encoding, bits=fmt.bits, levels=fmt.levels, loss=loss,
                  delay=delay, lr_decay_epochs=decay)
    fields.update(override)
    return pack_struct(protocol.ConfigureRequest, **fields)


def make_rows(n_rows, n, fmt, seed, table=None):
    """Packed rows of a noisy linear problem, quantized as the host would."""
    rng = np.random.default_rng(seed)
    lo = 0.0 if fmt.levels == LevelMode.UNIFORM_UNSIGNED else -1.0
    x = rng.uniform(lo, 1.0, (n_rows, n))
    w = rng.normal(0, 0.5, n)
    y = np.clip(x @ w / n + rng.normal(0, 0.05, n_rows), -1, 1)
    fields = encode(x * fmt.top, fmt, "stochastic", rng, table)
    return pack_rows(fields, encode_labels(y), W, fmt)


def word_bytes(words):
    return np.ascontiguousarray(words, "<u4").tobytes()


class TB:
    """Clock, reset, UART source and sink, the Python device, and the request helpers."""

    def __init__(self, dut):
        self.dut = dut
        self.source = UartSource(dut.rx, baud=BAUD, bits=8, stop_bits=1)
        self.sink = UartSink(dut.tx, baud=BAUD, bits=8, stop_bits=1)
        self.model = ProtocolDevice(
            GoldenDevice(width=W, n_max=N_MAX, batch_max=BATCH_MAX), memory_words=MEMORY_WORDS,
            max_payload=MAX_PAYLOAD, clock_hz=CLK_FREQ, baud=BAUD, build_id=BUILD_ID,
            lanes=LANES)
        self.decoder = FrameDecoder(response=True)
        self.frames = []
        self.seq = 0

    async def start(self):
        period_ps = 2 * round(1e12 / CLK_FREQ / 2)
        cocotb.start_soon(Clock(self.dut.clk, period_ps, unit="ps").start())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    def next_seq(self):
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        return seq

    async def send(self, data):
        await self.source.write(bytes(data))
        await self.source.wait()

    async def pause(self):
        """Silence longer than the device's frame timeout."""
        await ClockCycles(self.dut.clk, TIMEOUT_CYCLES + 20)
        self.model.line_idle()

    async def receive(self, n, extra_ns=0):
        """The next ``n`` response frames from the device (fail after a generous timeout)."""
        waited, limit = 0, 40_000_000 + extra_ns
        while len(self.frames) < n:
            got = bytearray()
            while self.sink.count():
                got += self.sink.read_nowait(1)
            if got:
                self.frames += self.decoder.feed(got)
                waited = 0
                continue
            assert waited < limit, f"no response within {limit} ns ({len(self.frames)} of {n})"
            await Timer(2000, "ns")
            waited += 2000
        out, self.frames = self.frames[:n], self.frames[n:]
        return out

    async def quiet(self):
        """Nothing more arrives within a few byte times."""
        await Timer(30 * BYTE_NS, "ns")
        await self.receive(0)
        assert not self.frames and not self.sink.count(), "unexpected response"
        assert self.decoder.stats["bad_crc"] == 0 and self.decoder.stats["bad_escape"] == 0

    async def raw(self, data, *, model=True, loose=False):
        """Send ``data``; the device's responses, checked against the Python device's."""
        expected = FrameDecoder(response=True).feed(self.model.feed(data)) if model else None
        await self.send(data)
        if not model:
            return await self.receive(1)
        got = await self.receive(len(expected))
        for g, e in zip(got, expected):
            same(g, e, loose=loose)
        return got

    async def req(self, cmd, payload=b"", seq=None, **kw):
        seq = self.next_seq() if seq is None else seq
        (frame,) = await self.raw(encode_frame(cmd, seq, payload), **kw)
        assert (frame.cmd, frame.seq) == (cmd if isinstance(cmd, int) else Cmd(cmd), seq)
        return frame

    async def ok(self, cmd, payload=b"", layout=None, **kw):
        frame = await self.req(cmd, payload, **kw)
        assert frame.status == Status.OK, (cmd, frame.status, self.model.last_reason)
        return unpack_struct(layout, frame.payload) if layout else frame.payload

    async def refused(self, status, cmd, payload=b"", **kw):
        frame = await self.req(cmd, payload, **kw)
        assert frame.status == status, (cmd, frame.status, status)

    async def status(self, **kw):
        return await self.ok(Cmd.READ_STATUS, layout=protocol.StatusReply, **kw)

    async def read_model(self, n):
        raw = await self.ok(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=0,
                                                        count=n))
        model = np.frombuffer(raw, "<i4")
        assert (model == self.model.golden.read_model()).all()
        return model

    async def wait_idle(self):
        """Poll READ_STATUS until the device is no longer BUSY."""
        while True:
            s = await self.status(loose=True)
            if s["state"] != DeviceState.BUSY:
                return s

    async def busy_refusal(self, status, cmd, payload=b""):
        """A request the BUSY device refuses (the Python device, never busy, would not)."""
        frame = await self.req(cmd, payload, model=False)
        assert frame.status == status, (cmd, frame.status)
        self.model.last_error, self.model.last_error_cmd = status, cmd.value

    async def stream(self, words, rng):
        """TRAIN_STREAM ``words`` in frames of random sizes; compare the model at every
        epoch boundary."""
        pos = 0
        per_frame = MAX_PAYLOAD // WB
        while pos < len(words):
            take = min(rng.randint(1, per_frame), len(words) - pos)
            await self.ok(Cmd.TRAIN_STREAM, word_bytes(words[pos:pos + take]))
            pos += take
            if self.model.state == DeviceState.IDLE:
                await self.read_model(self.model.golden.config.n_features)


def same(got, expected, *, loose=False):
    """Responses agree (READ_STATUS without ``cycles``; ``loose``: status, cmd, seq only)."""
    head = (got.status, got.cmd, got.seq)
    assert head == (expected.status, expected.cmd, expected.seq), (got, expected)
    if loose:
        return
    if got.cmd == Cmd.READ_STATUS and got.status == Status.OK:
        g = unpack_struct(protocol.StatusReply, got.payload)
        e = unpack_struct(protocol.StatusReply, expected.payload)
        g.pop("cycles"), e.pop("cycles")
        assert g == e, (g, e)
    else:
        assert got.payload == expected.payload, (got, expected)


def random_frame_bytes(rng, n):
    return bytes(rng.choice([FEND, FESC, 0xDC, 0xDD, rng.randrange(256), rng.randrange(256)])
                 for _ in range(n))


# --- the tests -----------------------------------------------------------------------------------

@cocotb.test()
async def commands_and_refusals(dut):
    """Every command, every refusal the state machine and the payload checks make."""
    tb = TB(dut)
    await tb.start()
    info = await tb.ok(Cmd.IDENTIFY, layout=protocol.IdentifyReply)
    assert (info["width"], info["lanes"], info["n_max"], info["memory_words"]) == \
        (W, LANES, N_MAX, MEMORY_WORDS)
    assert (await tb.status())["state"] == DeviceState.UNCONFIGURED
    for cmd, payload in [(Cmd.LOAD_MODEL, bytes(6)), (Cmd.READ_MODEL, bytes(4)),
                         (Cmd.TRAIN_STREAM, bytes(WB)), (Cmd.RUN_EPOCHS, bytes(4))]:
        await tb.refused(Status.BAD_STATE, cmd, payload)
    for cmd in (0x00, 0x0B, 0xFF):
        await tb.refused(Status.UNKNOWN_CMD, cmd, b"xyz")
    for cmd in (Cmd.IDENTIFY, Cmd.READ_STATUS, Cmd.RESET):
        await tb.refused(Status.BAD_LENGTH, cmd, b"\x00")
    s = await tb.status()
    assert (s["last_error"], s["last_error_cmd"]) == (Status.BAD_LENGTH, Cmd.RESET.value)

    # CONFIGURE: every field checked, nothing changed by a refusal.
    n, rows = 7, 6
    fmt = Format(Encoding.PAIR, 3)
    await tb.refused(Status.BAD_LENGTH, Cmd.CONFIGURE, configure_payload(n, rows, fmt)[:-1])
    await tb.refused(Status.TOO_LARGE, Cmd.CONFIGURE,
                     configure_payload(N_MAX + 1, rows, fmt, bits=0))
    for bad in [dict(n_features=0), dict(rows_per_epoch=0), dict(lr=0), dict(encoding=4),
                dict(levels=3), dict(loss=3), dict(bits=0), dict(bits=9), dict(batch=0),
                dict(batch=BATCH_MAX + 1), dict(delay=2), dict(levels=LevelMode.TABLE, bits=1),
                # formats with more fields per word than the build's lanes
                *[dict(encoding=f.encoding, bits=f.bits) for f in NARROW]]:
        await tb.refused(Status.BAD_CONFIG, Cmd.CONFIGURE, configure_payload(n, rows, fmt, **bad))
    await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, fmt, encoding=Encoding.RAW,
                                                 levels=LevelMode.TABLE, bits=1))
    await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, fmt))
    assert (await tb.status())["state"] == DeviceState.IDLE
    await tb.read_model(n)

    # LOAD_MODEL / READ_MODEL ranges.
    rng = np.random.default_rng(1)
    words = rng.integers(-(1 << 31), 1 << 31, n).astype("<i4")
    await tb.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=2) +
                words[2:6].tobytes())
    await tb.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=0) + words[:2].tobytes())
    await tb.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=n))     # no words
    await tb.refused(Status.BAD_LENGTH, Cmd.LOAD_MODEL, b"\x00")
    await tb.refused(Status.BAD_LENGTH, Cmd.LOAD_MODEL, bytes(5))
    await tb.refused(Status.BAD_ARGUMENT, Cmd.LOAD_MODEL,
                     pack_struct(protocol.ModelOffset, offset=n - 1) + bytes(8))
    await tb.read_model(n)
    got = await tb.ok(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=3, count=2))
    assert got == words[3:5].tobytes()
    await tb.ok(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=n, count=0))
    await tb.refused(Status.BAD_ARGUMENT, Cmd.READ_MODEL,
                     pack_struct(protocol.ReadModelRequest, offset=n, count=1))
    await tb.refused(Status.TOO_LARGE, Cmd.READ_MODEL,
                     pack_struct(protocol.ReadModelRequest, offset=0,
                                 count=MAX_PAYLOAD // 4 + 1))
    await tb.refused(Status.BAD_LENGTH, Cmd.READ_MODEL, bytes(3))

    # LOAD_LEVELS: sizes, order, range; a TABLE format needs a table of 2**b entries.
    table8 = np.array([-250, -200, -100, -3, 0, 5, 99, 255], "<i2")
    await tb.refused(Status.BAD_LENGTH, Cmd.LOAD_LEVELS, table8.tobytes()[:-1])
    await tb.refused(Status.BAD_ARGUMENT, Cmd.LOAD_LEVELS, table8[:2].tobytes())
    await tb.refused(Status.BAD_ARGUMENT, Cmd.LOAD_LEVELS, table8[:6].tobytes())
    await tb.refused(Status.BAD_ARGUMENT, Cmd.LOAD_LEVELS, table8[::-1].tobytes())
    await tb.refused(Status.BAD_ARGUMENT, Cmd.LOAD_LEVELS,
                     np.array([-1, 0, 256, 300], "<i2").tobytes())
    tfmt = Format(Encoding.SINGLE, 3, LevelMode.TABLE)
    if not contract.format_fits(W, tfmt, LANES):
        tfmt = Format(Encoding.COMPACT, 3, LevelMode.TABLE)
    await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, tfmt))
    await tb.refused(Status.BAD_STATE, Cmd.TRAIN_STREAM, bytes(WB))
    await tb.ok(Cmd.LOAD_LEVELS, np.array([-255, -1, 0, 1], "<i2").tobytes())
    await tb.refused(Status.BAD_STATE, Cmd.TRAIN_STREAM, bytes(WB))
    await tb.ok(Cmd.LOAD_LEVELS, table8.tobytes())
    assert (await tb.status())["flags"] == 1
    await tb.refused(Status.BAD_LENGTH, Cmd.TRAIN_STREAM, bytes(WB + 1))
    data = make_rows(rows, n, tfmt, 2, table8.tolist())
    await tb.stream(data, random.Random(2))

    # A retry (same cmd and seq) is answered from the cache and not executed again, even
    # with another payload; a new seq executes.
    seq = tb.next_seq()
    load = pack_struct(protocol.ModelOffset, offset=0) + words[:1].tobytes()
    await tb.req(Cmd.LOAD_MODEL, load, seq=seq)
    await tb.req(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=0) + bytes(4), seq=seq)
    seq = tb.next_seq()
    first = await tb.req(Cmd.READ_STATUS, seq=seq)
    await tb.req(Cmd.READ_STATUS, seq=seq)
    again = await tb.req(Cmd.READ_STATUS, seq=seq)
    assert again.payload == first.payload
    assert tb.model.stats["retries"] == 3
    await tb.read_model(n)

    # STORE_DATA before and after RESET; RESET returns to power-up.
    await tb.ok(Cmd.STORE_DATA, pack_struct(protocol.StoreDataHeader, offset=0) + bytes(2 * WB),
                layout=protocol.StoreDataReply)
    await tb.ok(Cmd.RESET)
    s = await tb.status()
    assert (s["state"], s["flags"], s["stored_words"], s["last_error"]) == (
        DeviceState.UNCONFIGURED, 0, 0, Status.OK)
    await tb.quiet()


#: Code formats this build refuses: more fields per word than LANES.
NARROW = [f for f in (Format(e, b) for e in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
                      for b in range(1, 9)) if not contract.format_fits(W, f, LANES)]

def in_parts(fmt):
    """Whether this build takes ``fmt``'s words in parts (more fields than lanes)."""
    return contract.pipeline_lanes(W, fmt, LANES) < contract.lanes_in_word(W, fmt)


FORMATS = [
    # format, loss, batch, delay, lr, lr_decay_epochs
    (Format(Encoding.PAIR, 4), Loss.SQUARED, 1, 0, 1 << 20, 0),
    (Format(Encoding.SINGLE, 2, LevelMode.UNIFORM_UNSIGNED), Loss.LOGISTIC, 3, 1, 1 << 19, 1),
    (Format(Encoding.COMPACT, 3, LevelMode.TABLE), Loss.HINGE, 2, 0, 1 << 18, 2),
    (Format(Encoding.RAW, 1), Loss.SQUARED, 4, 1, 1 << 21, 0),
]
TABLE8 = [-255, -180, -90, -20, 20, 90, 180, 255]


@cocotb.test()
async def streamed_training(dut):
    """TRAIN_STREAM in frames of random sizes (rows and epochs split across frames) for
    several formats, losses, batches and delays: replies and models bit-exact."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(5)
    await tb.ok(Cmd.LOAD_LEVELS, np.array(TABLE8, "<i2").tobytes())
    for i, (fmt, loss, batch, delay, lr, decay) in enumerate(FORMATS):
        if not contract.format_fits(W, fmt, LANES):
            continue
        n, rows, epochs = 5 + i, 10, 3
        if in_parts(fmt):       # rows of more fields than a word's first part, label-only words
            n = min(N_MAX, contract.lanes_in_last_word(W, fmt) + 1 + i)
        await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, fmt, loss, lr, batch, delay, decay))
        data = make_rows(rows, n, fmt, 10 + i, TABLE8)
        await tb.stream(np.concatenate([data] * epochs), rng)
        s = await tb.status()
        assert (s["rows"], s["epochs"]) == (rows * epochs, epochs)
    # CONFIGURE in the middle of an epoch drops the partial epoch.
    fmt, loss, batch, delay, lr, decay = FORMATS[0]
    await tb.ok(Cmd.CONFIGURE, configure_payload(6, 8, fmt, loss, lr, batch, delay, decay))
    data = make_rows(8, 6, fmt, 20)
    await tb.ok(Cmd.TRAIN_STREAM, word_bytes(data[:5]))
    assert (await tb.status())["state"] == DeviceState.STREAMING
    await tb.ok(Cmd.CONFIGURE, configure_payload(6, 8, fmt, loss, lr, 2, 1, decay))
    await tb.stream(np.concatenate([data] * 2), rng)
    await tb.status()
    await tb.quiet()


@cocotb.test()
async def resident_training(dut):
    """STORE_DATA and RUN_EPOCHS: the checks, training bit-exact, streamed and resident epochs
    mixed, a BUSY device refusing what it must and RESET aborting it."""
    tb = TB(dut)
    await tb.start()
    fmt = Format(Encoding.PAIR, 2)
    n, rows = 6, 12
    if in_parts(Format(Encoding.PAIR, 1)):
        fmt = Format(Encoding.PAIR, 1)
        n = min(N_MAX, contract.lanes_in_last_word(W, fmt) + 4)
    data = make_rows(rows, n, fmt, 30)
    head = protocol.StoreDataHeader

    def store(offset, chunk):
        return pack_struct(head, offset=offset) + word_bytes(chunk)

    await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, fmt, Loss.SQUARED, 1 << 20, 2, 1, 2))
    await tb.refused(Status.BAD_STATE, Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest,
                                                                   epochs=1))
    await tb.ok(Cmd.STORE_DATA, store(0, data[:10]), layout=protocol.StoreDataReply)
    await tb.refused(Status.BAD_ARGUMENT, Cmd.STORE_DATA, store(11, data[11:13]))
    await tb.refused(Status.BAD_LENGTH, Cmd.STORE_DATA, store(10, data[10:12])[:-1])
    await tb.refused(Status.BAD_LENGTH, Cmd.STORE_DATA, b"\x00\x00")
    await tb.ok(Cmd.STORE_DATA, store(10, data[10:]), layout=protocol.StoreDataReply)
    await tb.refused(Status.BAD_ARGUMENT, Cmd.RUN_EPOCHS,
                     pack_struct(protocol.RunEpochsRequest, epochs=0))
    await tb.refused(Status.BAD_LENGTH, Cmd.RUN_EPOCHS, bytes(3))
    await tb.ok(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest, epochs=3))
    await tb.wait_idle()
    await tb.read_model(n)
    s = await tb.status()
    assert (s["epochs"], s["rows"]) == (3, 3 * rows)
    # the device's cycles: three runs of one epoch, each the timing model's plus the resident
    # memory's start
    cfg = tb.model.golden.config
    if SERIAL:
        run = timing.serial_run_cycles(W, cfg, 1) + timing.SERIAL_RESIDENT_START
    else:
        run = timing.run_cycles(W, cfg, 1, lanes=LANES) + timing.RESIDENT_START
    assert s["cycles"] == 3 * run, (s["cycles"], run)

    # A streamed epoch between resident ones (the learning rate keeps decaying).
    await tb.stream(data, random.Random(7))
    await tb.ok(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest, epochs=2))
    await tb.wait_idle()
    await tb.read_model(n)
    # Mid-epoch, RUN_EPOCHS is refused.
    await tb.ok(Cmd.TRAIN_STREAM, word_bytes(data[:3]))
    await tb.refused(Status.BAD_STATE, Cmd.RUN_EPOCHS,
                     pack_struct(protocol.RunEpochsRequest, epochs=1))
    await tb.stream(data[3:], random.Random(8))

    # Many epochs: BUSY, with the refusals of a busy device; IDENTIFY still answers.
    await tb.ok(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest, epochs=400))
    frame = await tb.req(Cmd.READ_STATUS, model=False)
    busy = unpack_struct(protocol.StatusReply, frame.payload)
    assert busy["state"] == DeviceState.BUSY and 0 < busy["epochs_left"] < 400, busy
    await tb.busy_refusal(Status.BAD_STATE, Cmd.TRAIN_STREAM, word_bytes(data[:2]))
    await tb.busy_refusal(Status.BAD_STATE, Cmd.STORE_DATA, store(0, data[:2]))
    await tb.busy_refusal(Status.BAD_STATE, Cmd.CONFIGURE, configure_payload(n, rows, fmt))
    await tb.busy_refusal(Status.BAD_STATE, Cmd.READ_MODEL,
                          pack_struct(protocol.ReadModelRequest, offset=0, count=1))
    await tb.req(Cmd.IDENTIFY, model=False)
    await tb.wait_idle()
    await tb.read_model(n)
    await tb.ok(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest, epochs=400))
    await tb.ok(Cmd.RESET)
    s = await tb.status()
    assert s["state"] == DeviceState.UNCONFIGURED and s["epochs_left"] == 0
    # Data larger than the resident memory: TOO_LARGE, and what was stored stays (filling a
    # memory of SPRAM size over the simulated UART would take hours: small memories only).
    if MEMORY_WORDS > 1024:
        await tb.quiet()
        return
    per_frame = (MAX_PAYLOAD - 4) // WB
    fill = np.zeros((MEMORY_WORDS, W // 32), np.uint32)
    for offset in range(0, MEMORY_WORDS, per_frame):
        await tb.ok(Cmd.STORE_DATA, store(offset, fill[offset:offset + per_frame]))
    await tb.refused(Status.TOO_LARGE, Cmd.STORE_DATA, store(MEMORY_WORDS - 1, data[:2]))
    assert (await tb.status())["stored_words"] == MEMORY_WORDS
    await tb.quiet()


@cocotb.test()
async def faults(dut):
    """Corrupted and dropped bytes, truncated frames, garbage, oversized frames, commands out
    of order: the documented answers (or silence), and no change to the training."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(11)
    fmt = Format(Encoding.PAIR, 3)
    n, rows = 8, 10
    data = make_rows(rows, n, fmt, 40)
    # Out of order: training before CONFIGURE.
    await tb.refused(Status.BAD_STATE, Cmd.TRAIN_STREAM, word_bytes(data[:4]))
    await tb.ok(Cmd.CONFIGURE, configure_payload(n, rows, fmt, Loss.SQUARED, 1 << 20))
    await tb.raw(random_frame_bytes(rng, 80))           # garbage at start: hunted over
    await tb.pause()
    pos = 0
    step = 7
    while pos < 2 * len(data):
        chunk = np.concatenate([data, data])[pos:pos + step]
        good = encode_frame(Cmd.TRAIN_STREAM, tb.next_seq(), word_bytes(chunk))
        fault = rng.choice(["corrupt", "drop", "truncate", "garbage", "none", "duplicate"])
        if fault == "corrupt":
            bad = bytearray(good)
            i = next(i for i in range(6, len(bad) - 2) if bad[i] < 0xC0 and bad[i - 1] != FESC)
            bad[i] ^= 1 << rng.randrange(8)
            await tb.raw(bytes(bad))
        elif fault == "drop":
            bad = bytearray(good)
            del bad[rng.randrange(6, len(bad) - 1)]
            await tb.raw(bytes(bad))
            await tb.pause()
        elif fault == "truncate":
            await tb.raw(good[:rng.randrange(2, len(good) - 1)])
            await tb.pause()
        elif fault == "garbage":
            await tb.raw(random_frame_bytes(rng, rng.randrange(1, 60)))
            await tb.pause()
        await tb.raw(good)
        if fault == "duplicate":
            await tb.raw(good)                          # the retry: cached, not trained twice
        pos += len(chunk)
        if tb.model.state == DeviceState.IDLE:
            await tb.read_model(n)
    await tb.raw(encode_frame(Cmd.STORE_DATA, tb.next_seq(), bytes(MAX_PAYLOAD + 1)))
    await tb.pause()
    s = await tb.status()
    assert (s["rows"], s["epochs"]) == (2 * rows, 2)
    assert tb.model.stats["rejected"] > 0
    await tb.read_model(n)
    await tb.quiet()
