"""cocotb tests of the UART echo device (see ``EchoTop`` in test_uart_framing.py).

The model is :class:`zipml.protocol.FrameDecoder` fed the same bytes, with a ``timeout()`` at
every pause longer than the device's timeout: its verdicts, encoded with
:func:`~zipml.protocol.encode_response`, must equal the device's answer byte for byte.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer
from cocotbext.uart import UartSink, UartSource

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

CLK_FREQ = int(os.environ.get("CLK_FREQ", 12_000_000))
BAUD = int(os.environ.get("BAUD", 3_000_000))
TIMEOUT_CYCLES = int(os.environ.get("TIMEOUT_CYCLES", 1600))
MAX_PAYLOAD = int(os.environ.get("MAX_PAYLOAD", 256))
BYTE_NS = 10 * 1e9 / BAUD


class TB:
    """Clock, reset, UART source and sink, and the model."""

    def __init__(self, dut):
        self.dut = dut
        self.source = UartSource(dut.rx, baud=BAUD, bits=8, stop_bits=1)
        self.sink = UartSink(dut.tx, baud=BAUD, bits=8, stop_bits=1)
        self.model = FrameDecoder(max_payload=MAX_PAYLOAD, report_errors=True)
        self.expected = bytearray()
        self.received = bytearray()

    async def start(self):
        period_ps = 2 * round(1e12 / CLK_FREQ / 2)     # cocotb wants an even period
        cocotb.start_soon(Clock(self.dut.clk, period_ps, unit="ps").start())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def send(self, data):
        """Send ``data`` with no gap and wait until its last stop bit is out."""
        data = bytes(data)
        for frame in self.model.feed(data):
            status = Status.OK if frame.status is None else frame.status
            self.expected += encode_response(status, frame.cmd, frame.seq, frame.payload)
        await self.source.write(data)
        await self.source.wait()

    async def pause(self):
        """Stay silent for longer than the device's timeout."""
        await ClockCycles(self.dut.clk, TIMEOUT_CYCLES + 20)
        self.model.timeout()

    async def collect(self, n, timeout_ns):
        """Read bytes from the sink until ``n`` are in or ``timeout_ns`` passes."""
        waited = 0
        while len(self.received) < n and waited < timeout_ns:
            if self.sink.count():
                self.received += self.sink.read_nowait(1)
            else:
                await Timer(1000, "ns")
                waited += 1000

    async def check(self):
        """Everything expected has arrived, and nothing else within a few byte times."""
        n = len(self.expected)
        await self.collect(n, (n + 200) * BYTE_NS * 1.5)
        await self.collect(n + 1, 20 * BYTE_NS)
        assert bytes(self.received) == bytes(self.expected), (
            f"device answered {bytes(self.received).hex()}\n"
            f"expected        {bytes(self.expected).hex()}")
        await self.collect(n, 0)


def random_payload(rng, n):
    """Payload bytes biased towards the bytes that need stuffing."""
    return bytes(rng.choice([0xC0, 0xDB, 0xDC, 0xDD, rng.randrange(256), rng.randrange(256)])
                 for _ in range(n))


@cocotb.test()
async def good_frames_are_echoed(dut):
    tb = TB(dut)
    await tb.start()
    rng = random.Random(1)
    for seq, length in enumerate([0, 1, 5, 64, MAX_PAYLOAD, 17, 3]):
        frame = encode_frame(rng.choice(list(Cmd)), seq, random_payload(rng, length))
        await tb.send(frame)
        n = len(tb.expected)
        await tb.collect(n, (n + 20) * BYTE_NS * 2)   # one request, one answer
    await tb.check()
    assert tb.model.stats["good"] == 7
    assert int(dut.frames_ok.value) == 7
    assert int(dut.frames_rejected.value) == 0 and int(dut.frames_dropped.value) == 0


@cocotb.test()
async def back_to_back_frames(dut):
    """Requests sent with no gap: the ring buffer holds one while the other is answered."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(2)
    stream = b"".join(encode_frame(Cmd.STORE_DATA, seq, random_payload(rng, rng.randrange(40)))
                      for seq in range(6))
    await tb.send(stream)
    await tb.check()
    assert int(dut.frames_ok.value) == 6


@cocotb.test()
async def resynchronises(dut):
    """Garbage, a dropped byte, a truncated frame: the next good frame is answered each time."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(3)
    good = [encode_frame(Cmd.TRAIN_STREAM, 100 + i, random_payload(rng, 20 + 7 * i))
            for i in range(6)]

    await tb.send(rng.randbytes(100))             # garbage at power-up: hunted over, no answer
    await tb.send(good[0])

    await tb.pause()
    await tb.send(rng.randbytes(60))              # garbage after a pause: silently skipped
    await tb.send(good[1])

    dropped = bytearray(good[2])
    del dropped[9]                                # a payload byte lost on the line
    await tb.send(dropped + good[3])              # -> BAD_CRC, then the next one is answered

    await tb.send(good[4][:15])                   # truncated; then the line goes quiet
    await tb.pause()
    await tb.send(good[4][15:])                   # its tail after the timeout: skipped
    await tb.send(good[5])
    await tb.check()

    decoded = FrameDecoder(response=True).feed(tb.received)
    answered = [(f.seq, f.status) for f in decoded]
    assert [seq for seq, status in answered if status == Status.OK] == [100, 101, 103, 105]
    assert (102, Status.BAD_CRC) in answered, answered


@cocotb.test()
async def corrupted_frame_gets_bad_crc(dut):
    """A corrupted byte: the answer is BAD_CRC with no payload, and the data is not echoed."""
    tb = TB(dut)
    await tb.start()
    rng = random.Random(4)
    payload = random_payload(rng, 30)
    frame = bytearray(encode_frame(Cmd.LOAD_MODEL, 7, payload))
    # A payload byte that is neither special nor part of an escape, so the frame stays a frame.
    i = next(i for i in range(8, len(frame)) if frame[i] < 0xC0 and frame[i - 1] != FESC)
    frame[i] ^= 0x01
    await tb.send(frame)
    await tb.send(encode_frame(Cmd.LOAD_MODEL, 8, payload))
    await tb.check()
    decoded = FrameDecoder(response=True).feed(tb.received)
    assert [(f.seq, f.status, f.payload) for f in decoded] == [
        (7, Status.BAD_CRC, b""), (8, Status.OK, payload)]
    assert int(dut.frames_rejected.value) == 1


@cocotb.test()
async def oversized_and_bad_length(dut):
    """A payload beyond the device's maximum, and a length field that does not match."""
    tb = TB(dut)
    await tb.start()
    await tb.send(encode_frame(Cmd.STORE_DATA, 1, bytes(MAX_PAYLOAD + 1)))
    body = bytes((Cmd.STORE_DATA.value, 2, 5, 0, 1, 2, 3))
    await tb.send(bytes((FEND,)) + stuff(body + crc16(body).to_bytes(2, "little")) +
                  bytes((FEND,)))
    await tb.send(encode_frame(Cmd.STORE_DATA, 3, bytes(MAX_PAYLOAD)))
    await tb.check()
    decoded = FrameDecoder(response=True).feed(tb.received)
    assert [(f.seq, f.status) for f in decoded] == [
        (1, Status.TOO_LARGE), (2, Status.BAD_LENGTH), (3, Status.OK)]


@cocotb.test()
async def uart_framing_error_drops_the_byte(dut):
    """A byte with a bad stop bit, inserted in a frame, is dropped by the UART: the frame
    arrives intact."""
    tb = TB(dut)
    await tb.start()
    frame = encode_frame(Cmd.IDENTIFY, 9, b"abc")
    await tb.send(frame[:4])
    bit = CLK_FREQ // BAUD
    for level in [0] + [(0x55 >> i) & 1 for i in range(8)] + [0]:   # stop bit 0
        dut.rx.value = level
        await ClockCycles(dut.clk, bit)
    dut.rx.value = 1
    await ClockCycles(dut.clk, bit)
    await RisingEdge(dut.clk)
    await tb.send(frame[4:])
    await tb.send(encode_frame(Cmd.IDENTIFY, 10, b"abc"))
    await tb.check()
    assert int(dut.framing_errors.value) == 1
    decoded = FrameDecoder(response=True).feed(tb.received)
    assert [(f.seq, f.status) for f in decoded] == [(9, Status.OK), (10, Status.OK)]
