"""cocotb tests of the AXI-Stream <-> byte adapters (``AXISByteBridge`` tops in test_axis.py),
driven by cocotbext-axi's AxiStreamSource and AxiStreamSink with idle cycles on the source and
back-pressure on the sink.

- ``test_loopback``: a byte FIFO as the core. Random packets of random lengths (FEND-rich, with
  random tkeep holes) go in; the bytes kept must come out in order, every frame-closing FEND must
  end a packet, and without a flush timeout the packets are exactly the frames.
- ``test_frame_echo``: the frame echo core. Frames from :func:`zipml.protocol.encode_frame`,
  split into random packets, go in; every response must decode with
  :class:`zipml.protocol.FrameDecoder`, answer its request, and arrive as one packet.

Every output beat is checked against the XDMA card-to-host rule: ``tkeep`` all ones except on a
``tlast`` beat, whose ``tkeep`` is contiguous from lane 0 and not empty.
"""

import os
import random
from itertools import accumulate

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from zipml.protocol import FEND, Cmd, FrameDecoder, Status, crc16, encode_frame, stuff

DATA_WIDTH = int(os.environ.get("DATA_WIDTH", 64))
LANES = DATA_WIDTH // 8
FLUSH_TIMEOUT = int(os.environ.get("FLUSH_TIMEOUT") or 0) or None
MAX_PAYLOAD = int(os.environ.get("MAX_PAYLOAD", 64))
IDLE, BACKPRESSURE = 0.3, 0.3


def pauses(rng, probability):
    while True:
        yield rng.random() < probability


def split_frames(data):
    """The packets BytesToAXIS makes of ``data`` without a flush timeout: each ends at a FEND
    that follows a byte other than FEND."""
    packets, start, after_fend = [], 0, True
    for i, byte in enumerate(data):
        if byte == FEND and not after_fend:
            packets.append(bytes(data[start:i + 1]))
            start = i + 1
        after_fend = byte == FEND
    assert start == len(data), "the stream must end with a closing FEND"
    return packets


class TB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        self.source.set_pause_generator(pauses(self.rng, IDLE))
        self.sink.set_pause_generator(pauses(self.rng, BACKPRESSURE))
        self.beats = 0

    async def start(self):
        cocotb.start_soon(Clock(self.dut.clk, 8, unit="ns").start())
        cocotb.start_soon(self.check_beats())
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def check_beats(self):
        """Assert the card-to-host tkeep rule on every output handshake."""
        full = (1 << LANES) - 1
        contiguous = {(1 << k) - 1 for k in range(1, LANES + 1)}
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if dut.rst.value or not (dut.m_axis_tvalid.value and dut.m_axis_tready.value):
                continue
            keep, last = int(dut.m_axis_tkeep.value), int(dut.m_axis_tlast.value)
            assert keep in contiguous if last else keep == full, \
                f"beat {self.beats}: tkeep {keep:#x} with tlast {last}"
            self.beats += 1

    async def send(self, packets):
        """Send ``(tdata, tkeep)`` packets; tkeep None means all bytes kept."""
        for tdata, tkeep in packets:
            await self.source.send(AxiStreamFrame(tdata, tkeep=tkeep))

    async def receive(self, count, timeout=100_000):
        packets = []
        for _ in range(count):
            for _ in range(timeout):
                if not self.sink.empty():
                    break
                await RisingEdge(self.dut.clk)
            else:
                raise TimeoutError(f"m_axis: packet {len(packets)} of {count} did not arrive")
            packets.append(bytes(self.sink.recv_nowait().tdata))
        return packets


def random_bytes(rng, length, fend_rate=0.1):
    return bytes(FEND if rng.random() < fend_rate else rng.randrange(256) for _ in range(length))


@cocotb.test()
async def test_loopback(dut):
    tb = TB(dut, 1)
    rng = tb.rng
    await tb.start()
    stream, packets = bytearray(), []
    for n in range(60):
        kept = random_bytes(rng, rng.randrange(1, 4 * LANES + 5))
        if n == 59 or rng.random() < 0.3:
            kept += bytes((0x55, FEND))              # end on a closing FEND now and then
        tdata, tkeep = bytearray(), []
        for byte in kept:                            # holes: bytes with tkeep clear
            while rng.random() < 0.15:
                tdata.append(rng.randrange(256))
                tkeep.append(0)
            tdata.append(byte)
            tkeep.append(1)
        packets.append((bytes(tdata), tkeep))
        stream += kept
    expected = split_frames(stream)
    cocotb.start_soon(tb.send(packets))
    if FLUSH_TIMEOUT is None:
        got = await tb.receive(len(expected))
        assert got == expected
    else:
        got = []
        while sum(map(len, got)) < len(stream):
            got += await tb.receive(1)
        assert b"".join(got) == stream
        # Every frame ends a packet; the timeout may cut frames into more packets.
        assert set(accumulate(map(len, expected))) <= set(accumulate(map(len, got)))
    await ClockCycles(dut.clk, 20)
    assert tb.sink.empty()
    dut._log.info("%d bytes in %d packets, %d output beats", len(stream), len(expected), tb.beats)



@cocotb.test()
async def test_frame_echo(dut):
    tb = TB(dut, 2)
    rng = tb.rng
    await tb.start()
    requests, expected = [], []
    for seq in range(40):
        payload = random_bytes(rng, rng.randrange(0, MAX_PAYLOAD + 1), fend_rate=0.05)
        cmd = rng.choice(list(Cmd))
        if seq % 7 == 3:                             # a bad CRC: answered BAD_CRC, no payload
            body = bytes((cmd.value, seq)) + len(payload).to_bytes(2, "little") + payload
            crc = (crc16(body) ^ 0x0001).to_bytes(2, "little")
            requests.append(bytes((FEND,)) + stuff(body + crc) + bytes((FEND,)))
            expected.append((Status.BAD_CRC, cmd, seq, b""))
            continue
        requests.append(encode_frame(cmd, seq, payload))
        expected.append((Status.OK, cmd, seq, payload))
    # Groups of up to three requests (within the receiver's buffer) in flight at a time, cut
    # into packets anywhere, as host writes may be.
    decoder = FrameDecoder(response=True)
    sent = packets = 0
    while sent < len(requests):
        group = rng.randrange(1, 4)
        stream = b"".join(requests[sent:sent + group])
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randrange(4))))
        chunks = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)])]
        await tb.send((chunk, None) for chunk in chunks)
        got = await tb.receive(len(expected[sent:sent + group]))
        for packet, (status, cmd, seq, payload) in zip(got, expected[sent:sent + group]):
            frames = decoder.feed(packet)
            assert len(frames) == 1, f"a packet must hold one response: {packet.hex()}"
            frame = frames[0]
            assert (frame.status, frame.cmd, frame.seq, frame.payload) == \
                (status, cmd, seq, payload)
        sent += group
        packets += len(chunks)
    await ClockCycles(dut.clk, 20)
    assert tb.sink.empty()
    dut._log.info("%d frames in %d packets, %d output beats", len(expected), packets, tb.beats)
