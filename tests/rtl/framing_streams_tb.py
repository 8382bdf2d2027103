"""cocotb tests of FrameReceiver and FrameTransmitter at stream level (``FramingTop`` in
test_uart_framing.py), sources with idle cycles and sinks with back-pressure.

The model is :mod:`zipml.protocol`: the receiver's verdicts, payloads and counters must equal
:class:`~zipml.protocol.FrameDecoder`'s, the transmitter's bytes :func:`encode_response`'s.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

from zipml.protocol import (
    FEND,
    FESC,
    Cmd,
    FrameDecoder,
    Status,
    crc16,
    encode_frame,
    encode_response,
    stuff,
)
from zipml.sim.streams import StreamPort, stream_get, stream_put

TIMEOUT_CYCLES = int(os.environ.get("TIMEOUT_CYCLES", 300))
MAX_PAYLOAD = int(os.environ.get("MAX_PAYLOAD", 64))
IDLE, BACKPRESSURE = 0.3, 0.3


def pack_header(status, cmd, seq, length):
    return int(status) | int(cmd) << 8 | seq << 16 | length << 24


def unpack_header(value):
    return value & 0xFF, value >> 8 & 0xFF, value >> 16 & 0xFF, value >> 24 & 0xFFFF


class TB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.rx_bytes = StreamPort(dut, "rx_bytes")
        self.rx_header = StreamPort(dut, "rx_header")
        self.rx_payload = StreamPort(dut, "rx_payload")
        self.tx_header = StreamPort(dut, "tx_header")
        self.tx_payload = StreamPort(dut, "tx_payload")
        self.tx_bytes = StreamPort(dut, "tx_bytes")
        self.model = FrameDecoder(max_payload=MAX_PAYLOAD, report_errors=True)

    async def start(self):
        for port in (self.rx_bytes, self.tx_header, self.tx_payload):
            port.valid.value = 0
        for port in (self.rx_header, self.rx_payload, self.tx_bytes):
            port.ready.value = 0
        cocotb.start_soon(Clock(self.dut.clk, 10, unit="ns").start())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def receive(self, frames):
        """Read the receiver's headers and payloads for ``frames`` (the model's verdicts)."""
        got = []
        for _ in frames:
            (value,) = await stream_get(self.rx_header, 1, backpressure=BACKPRESSURE,
                                        rng=self.rng, timeout=5000)
            status, cmd, seq, length = unpack_header(value)
            payload = await stream_get(self.rx_payload, length, backpressure=BACKPRESSURE,
                                       rng=self.rng, timeout=5000)
            got.append((status, cmd, seq, bytes(payload)))
        return got

    async def feed(self, chunk):
        """Send ``chunk`` with idle cycles while reading what the receiver makes of it; compare
        with the model; then stay silent past the timeout (the model is told)."""
        frames = self.model.feed(chunk)
        expected = [((Status.OK if f.status is None else f.status).value, int(f.cmd.value if
                     isinstance(f.cmd, Cmd) else f.cmd), f.seq, f.payload) for f in frames]
        reader = cocotb.start_soon(self.receive(frames))
        await stream_put(self.rx_bytes, chunk, idle=IDLE, rng=self.rng)
        got = await reader
        assert got == expected, f"receiver gave {got}\nmodel gave    {expected}"
        await ClockCycles(self.dut.clk, TIMEOUT_CYCLES + 10)
        self.model.timeout()
        assert int(self.dut.rx_header__valid.value) == 0, "an unexpected header"
        assert int(self.dut.rx_payload__valid.value) == 0, "unexpected payload"

    def check_counters(self):
        stats = self.model.stats
        assert int(self.dut.frames_ok.value) == stats["good"]
        assert int(self.dut.frames_rejected.value) == (
            stats["bad_crc"] + stats["bad_length"] + stats["too_large"])
        assert int(self.dut.frames_dropped.value) == (
            stats["runt"] + stats["bad_escape"] + stats["truncated"])


def random_payload(rng, n):
    return bytes(rng.choice([FEND, FESC, 0xDC, 0xDD, rng.randrange(256)]) for _ in range(n))


@cocotb.test()
async def receiver_matches_model(dut):
    tb = TB(dut, 1)
    await tb.start()
    rng = tb.rng
    seq = 0

    def good(length=None):
        nonlocal seq
        seq = (seq + 1) & 0xFF
        length = rng.randrange(MAX_PAYLOAD + 1) if length is None else length
        return encode_frame(rng.choice(list(Cmd)), seq, random_payload(rng, length))

    await tb.feed(rng.randbytes(50))                          # hunting after reset
    for length in (0, 1, 2, MAX_PAYLOAD):
        await tb.feed(good(length))
    for _ in range(60):
        kind = rng.randrange(9)
        frame = bytearray(good())
        if kind == 0:                                         # corrupted byte
            i = rng.randrange(1, len(frame) - 1)
            frame[i] = rng.choice([b for b in range(256) if b not in (frame[i], FEND)])
        elif kind == 1:                                       # dropped byte
            del frame[rng.randrange(1, len(frame) - 1)]
        elif kind == 2:                                       # truncated, then a good one
            frame = frame[:rng.randrange(1, len(frame) - 1)] + good()
        elif kind == 3:                                       # garbage, then a good one
            frame = bytes((FEND,)) + rng.randbytes(rng.randrange(1, 30)) + good()
        elif kind == 4:                                       # runt
            frame = bytes((FEND,)) + rng.randbytes(rng.randrange(1, 6)).replace(
                bytes((FEND,)), b"") + bytes((FEND,))
        elif kind == 5:                                       # too large
            frame = encode_frame(Cmd.STORE_DATA, 1, rng.randbytes(MAX_PAYLOAD + 1))
        elif kind == 6:                                       # length field disagrees
            body = bytes((Cmd.CONFIGURE.value, 3, 4, 0)) + rng.randbytes(rng.randrange(6))
            frame = bytes((FEND,)) + stuff(body + crc16(body).to_bytes(2, "little")) + \
                bytes((FEND,))
        elif kind == 7:                                       # bad escape
            frame = frame[:5] + bytes((FESC, 0x42)) + frame[5:]
        await tb.feed(bytes(frame))
    tb.check_counters()
    assert tb.model.stats["good"] > 20


@cocotb.test()
async def receiver_reports_busy_and_keeps_no_trace(dut):
    """A frame that finds the buffer full is rejected with BUSY; the earlier frame is intact."""
    tb = TB(dut, 2)
    await tb.start()
    first = random_payload(tb.rng, MAX_PAYLOAD)
    await stream_put(tb.rx_bytes, encode_frame(Cmd.STORE_DATA, 1, first), idle=IDLE, rng=tb.rng)
    await stream_put(tb.rx_bytes, encode_frame(Cmd.STORE_DATA, 2, b"0123456789"))
    got = await tb.receive([1, 2])
    assert got == [(Status.OK.value, Cmd.STORE_DATA.value, 1, first),
                   (Status.BUSY.value, Cmd.STORE_DATA.value, 2, b"")], got
    reader = cocotb.start_soon(tb.receive([2]))
    await stream_put(tb.rx_bytes, encode_frame(Cmd.STORE_DATA, 2, b"0123456789"))
    assert await reader == [(Status.OK.value, Cmd.STORE_DATA.value, 2, b"0123456789")]


@cocotb.test()
async def transmitter_matches_model(dut):
    tb = TB(dut, 3)
    await tb.start()
    rng = tb.rng
    responses = []
    for i in range(40):
        length = rng.choice([0, 1, 2, rng.randrange(300)])
        responses.append((rng.choice(list(Status)), rng.choice(list(Cmd)), rng.choice([i, FEND,
                          FESC]), random_payload(rng, length)))
    expected = b"".join(encode_response(*r) for r in responses)

    headers = [pack_header(s.value, c.value, q, len(p)) for s, c, q, p in responses]
    payload = b"".join(p for *_, p in responses)
    put_headers = cocotb.start_soon(stream_put(tb.tx_header, headers, idle=IDLE, rng=rng))
    put_payload = cocotb.start_soon(stream_put(tb.tx_payload, payload, idle=IDLE, rng=rng))
    got = await stream_get(tb.tx_bytes, len(expected), backpressure=BACKPRESSURE, rng=rng,
                           timeout=1000)
    await put_headers
    await put_payload
    assert bytes(got) == expected
    decoded = FrameDecoder(response=True).feed(bytes(got))
    assert [(f.status, f.cmd, f.seq, f.payload) for f in decoded] == responses
