"""Byte-level protocol fuzzing of the device core (:class:`zipml.hw.device.DeviceCore`).

The core sits inside the virtual board's :class:`~zipml.sim.virtual_board.ChunkedCore`, so
request bytes go straight into the frame receiver (no UART bit timing; the UART path is
``test_device``'s). Every case's bytes also go to
:class:`zipml.sim.protocol_device.ProtocolDevice`; the responses must agree frame for frame,
with the documented differences masked: READ_STATUS's ``cycles``, and the status polls while
the device trains resident epochs in the background. The generator keeps away from the other
documented differences (LOAD_MODEL, READ_MODEL and LOAD_LEVELS in the middle of a streamed
epoch) by construction.

Cases are drawn by category (see :data:`CATEGORIES`); the counts go to ``FUZZ_REPORT`` (JSON).
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

from zipml import contract, protocol
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.protocol import (
    FEND,
    FESC,
    TFEND,
    TFESC,
    Cmd,
    DeviceState,
    FrameDecoder,
    Status,
    crc16,
    encode_frame,
    pack_struct,
    stuff,
    unpack_struct,
)
from zipml.sim.golden import GoldenDevice
from zipml.sim.protocol_device import ProtocolDevice
from zipml.sim.virtual_board import CHUNK, put_chunks, take_chunks

CLK_FREQ = int(os.environ.get("CLK_FREQ", 12_000_000))
W = int(os.environ.get("WIDTH", 32))
N_MAX = int(os.environ.get("N_MAX", 16))
MEMORY_WORDS = int(os.environ.get("MEMORY_WORDS", 512))
MAX_PAYLOAD = int(os.environ.get("MAX_PAYLOAD", 256))
BATCH_MAX = int(os.environ.get("BATCH_MAX", 8))
BUILD_ID = int(os.environ.get("BUILD_ID", 0))
TIMEOUT_CYCLES = int(os.environ.get("TIMEOUT_CYCLES", 600_000))
FRAMES = int(os.environ.get("FUZZ_FRAMES", 10_000))
SEED = int(os.environ.get("FUZZ_SEED", 1))
REPORT = os.environ.get("FUZZ_REPORT", "")
WB = W // 8
WAIT_LIMIT = 200_000        # cycles to wait for a response (below the frame timeout)

#: Fuzz categories and their weights.
CATEGORIES = {
    "valid": 20,            # a well-formed request, any command, any state (out of order too)
    "bad_payload": 10,      # well framed, payload of the wrong size or with fields out of range
    "unknown_opcode": 5,
    "mutated": 20,          # a valid frame with 1..3 bytes replaced or bits flipped
    "length_lie": 8,        # the length field disagrees with the payload; CRC correct
    "truncated": 8,         # a valid frame cut short; the next frame's FEND ends it
    "garbage": 10,          # random bytes (rich in FEND/FESC) before a valid frame
    "oversized": 3,         # payload beyond the device's limit
    "bad_escape": 4,        # FESC followed by a byte other than TFEND/TFESC
    "runt": 4,              # 1..5 body bytes
    "retry": 8,             # the previous frame again: answered from the cache
}


def configure_payload(rng, valid=True):
    encoding = rng.choice(list(Encoding))
    levels = rng.choice(list(LevelMode))
    bits = rng.randint(2 if levels == LevelMode.TABLE else 1, 4)
    fields = dict(n_features=rng.randint(1, N_MAX), batch=rng.randint(1, BATCH_MAX),
                  rows_per_epoch=rng.randint(1, 6), lr=rng.randint(1, 1 << 20),
                  encoding=encoding, bits=bits, levels=levels, loss=rng.choice(list(Loss)),
                  delay=rng.randint(0, 1), lr_decay_epochs=rng.randint(0, 3))
    if not valid:
        name = rng.choice([f for f in fields if f != "lr_decay_epochs"])   # any value is valid
        fields[name] = {"n_features": rng.choice([0, N_MAX + 1, 0xFFFF]),
                        "batch": rng.choice([0, BATCH_MAX + 1]), "rows_per_epoch": 0,
                        "lr": 0, "encoding": rng.randint(4, 255), "bits": rng.choice([0, 9, 255]),
                        "levels": rng.randint(3, 255), "loss": rng.randint(3, 255),
                        "delay": rng.randint(2, 255)}[name]
    return pack_struct(protocol.ConfigureRequest, **fields)


class Fuzzer:
    """Clock, reset, the chunked byte streams, the Python device and the case generator."""

    def __init__(self, dut, seed=SEED):
        self.dut = dut
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.period_ps = 2 * round(1e12 / CLK_FREQ / 2)
        self.model = ProtocolDevice(
            GoldenDevice(width=W, n_max=N_MAX, batch_max=BATCH_MAX), memory_words=MEMORY_WORDS,
            max_payload=MAX_PAYLOAD, clock_hz=CLK_FREQ, baud=0, build_id=BUILD_ID)
        self.decoder = FrameDecoder(response=True)
        self.frames = []
        self.seq = 0
        self.last_frame = encode_frame(Cmd.IDENTIFY, 0)
        self.counts = {c: 0 for c in CATEGORIES}
        self.statuses = {}
        self.responses = 0
        self.model_checks = 0

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, self.period_ps, unit="ps").start())
        dut.i_valid.value = 0
        dut.o_ready.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4)

    async def cycles(self, n):
        await Timer(n * self.period_ps, "ps")

    # --- byte streams (as the virtual board's bridge moves them) --------------------------------

    async def feed(self, data, chunk=CHUNK, gap=0):
        await put_chunks(self.dut, data, self.period_ps, chunk, gap, after_chunk=self.drain)

    async def drain(self):
        out = await take_chunks(self.dut, self.period_ps)
        if out:
            self.frames += self.decoder.feed(out)

    async def receive(self, n, quiet=64):
        """The next ``n`` response frames, then ``quiet`` cycles with nothing more."""
        waited = 0
        while len(self.frames) < n:
            assert waited < WAIT_LIMIT, f"{len(self.frames)} of {n} responses in {waited} cycles"
            await self.cycles(32)
            waited += 32
            await self.drain()
        await self.cycles(quiet)
        await self.drain()
        assert len(self.frames) == n, f"{len(self.frames) - n} unexpected responses"
        bad = {k: self.decoder.stats[k] for k in ("bad_crc", "bad_escape", "runt", "bad_length")}
        assert not any(bad.values()), f"the device sent broken frames: {bad}"
        out, self.frames = self.frames, []
        return out

    # --- one case: the same bytes to both devices -------------------------------------------------

    async def exchange(self, data, *, loose=False, chunk=CHUNK, gap=0):
        before = self.model.state
        expected = FrameDecoder(response=True).feed(self.model.feed(data))
        await self.feed(data, chunk, gap)
        got = await self.receive(len(expected))
        for g, e in zip(got, expected):
            same(g, e, loose=loose)
            self.responses += 1
            name = g.status.name if isinstance(g.status, Status) else str(g.status)
            self.statuses[name] = self.statuses.get(name, 0) + 1
        for g in got:
            if g.cmd == Cmd.RUN_EPOCHS and g.status == Status.OK and before != DeviceState.BUSY:
                await self.wait_idle()
        return got

    async def request(self, cmd, payload=b"", **kw):
        seq = self.next_seq()
        frame = encode_frame(cmd, seq, payload)
        self.last_frame = frame
        got = await self.exchange(frame, **kw)
        assert got and got[-1].seq == seq, got     # a truncated frame before may answer too
        return got[-1]

    def next_seq(self):
        seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        return seq

    async def wait_idle(self):
        """Poll READ_STATUS (progress fields unchecked) until the device is not BUSY."""
        while True:
            got = await self.request(Cmd.READ_STATUS, loose=True)
            s = unpack_struct(protocol.StatusReply, got.payload)
            if s["state"] != DeviceState.BUSY:
                await self.request(Cmd.READ_STATUS)
                return

    async def check_model(self):
        """READ_MODEL of every word equals the Python device's model (IDLE devices only)."""
        if self.model.state != DeviceState.IDLE:
            return
        n = self.model.golden.config.n_features
        got = await self.request(Cmd.READ_MODEL,
                                 pack_struct(protocol.ReadModelRequest, offset=0, count=n))
        assert got.status == Status.OK
        assert (np.frombuffer(got.payload, "<i4") == self.model.golden.read_model()).all()
        self.model_checks += 1

    # --- the generator ----------------------------------------------------------------------------

    def words(self, k):
        """k stream words: packed rows of the current format, or random bits (not for COMPACT:
        see :meth:`compact`)."""
        cfg = self.model.golden.config
        if cfg is None or (not self.compact() and self.rng.random() < 0.3):
            return self.nrng.integers(0, 1 << 32, (k, W // 32), dtype=np.uint64).astype(
                "<u4").tobytes()
        fmt, n = cfg.fmt, cfg.n_features
        r = contract.row_words(W, fmt, n)
        pos = self.model._epoch_pos % r            # where the stream is inside a row
        rows = -(-(pos + k) // r)
        if fmt.encoding == Encoding.RAW:
            fields = self.nrng.integers(-(1 << 30), 1 << 30, (rows, n)).astype(np.int32)
            fields = fields.view(np.uint32)
        elif fmt.encoding == Encoding.COMPACT:
            i = self.nrng.integers(0, fmt.n_levels - 1, (rows, n), dtype=np.uint32)
            ab = self.nrng.integers(0, 4, (rows, n), dtype=np.uint32)
            fields = i | (ab << fmt.index_bits)
        else:
            fields = self.nrng.integers(0, 1 << fmt.field_bits, (rows, n), dtype=np.uint32)
        labels = self.nrng.integers(-(1 << 24), 1 << 24, rows).astype(np.int32)
        words = pack_rows(fields, labels, W, fmt)[pos:]
        return np.ascontiguousarray(words[:k], "<u4").tobytes()

    def compact(self):
        """The Python device raises (instead of answering) on COMPACT words whose interval
        index is beyond the last interval, so only well-formed COMPACT rows are trained on:
        no RUN_EPOCHS over stored words of other formats, no replay of old stream frames."""
        cfg = self.model.golden.config
        return cfg is not None and cfg.fmt.encoding == Encoding.COMPACT

    def valid_request(self):
        """A well-formed request: (cmd, payload). Commands the documented differences make
        unequal (model access and level tables mid-epoch) are not drawn while STREAMING."""
        rng = self.rng
        streaming = self.model.state == DeviceState.STREAMING
        cfg = self.model.golden.config
        n = cfg.n_features if cfg is not None else rng.randint(1, N_MAX)
        choices = [Cmd.IDENTIFY, Cmd.READ_STATUS, Cmd.CONFIGURE, Cmd.TRAIN_STREAM,
                   Cmd.TRAIN_STREAM, Cmd.TRAIN_STREAM, Cmd.STORE_DATA, Cmd.RUN_EPOCHS]
        if not streaming:
            choices += [Cmd.LOAD_MODEL, Cmd.READ_MODEL, Cmd.LOAD_MODEL, Cmd.LOAD_LEVELS]
        if self.compact():
            choices.remove(Cmd.RUN_EPOCHS)
        if rng.random() < 0.02:
            choices = [Cmd.RESET]
        cmd = rng.choice(choices)
        if cmd == Cmd.CONFIGURE:
            return cmd, configure_payload(rng, valid=rng.random() < 0.8)
        if cmd == Cmd.LOAD_MODEL:
            offset = rng.randint(0, n)
            count = rng.randint(0, n - offset + (rng.random() < 0.1))
            words = self.nrng.integers(-(1 << 31), 1 << 31, count).astype("<i4")
            return cmd, pack_struct(protocol.ModelOffset, offset=offset) + words.tobytes()
        if cmd == Cmd.READ_MODEL:
            offset = rng.randint(0, n)
            count = rng.randint(0, n - offset + (rng.random() < 0.1))
            return cmd, pack_struct(protocol.ReadModelRequest, offset=offset, count=count)
        if cmd == Cmd.LOAD_LEVELS:
            size = rng.choice([2, 3, 4, 4, 8, 8, 16, 16, 32])
            if rng.random() < 0.7:
                table = sorted(rng.sample(range(-contract.TABLE_MAX, contract.TABLE_MAX + 1),
                                          size))
            else:
                table = [rng.randint(-400, 400) for _ in range(size)]
            return cmd, np.array(table, "<i2").tobytes()
        if cmd == Cmd.TRAIN_STREAM:
            return cmd, self.words(rng.randint(1, MAX_PAYLOAD // WB))
        if cmd == Cmd.STORE_DATA:
            stored = self.model.stored_words
            offset = rng.choice([0, stored, stored, rng.randint(0, stored + 1)])
            if rng.random() < 0.03:
                offset = MEMORY_WORDS - rng.randint(0, 3)
            k = rng.randint(0, (MAX_PAYLOAD - 4) // WB)
            return cmd, pack_struct(protocol.StoreDataHeader, offset=offset) + self.words(k)
        if cmd == Cmd.RUN_EPOCHS:
            return cmd, pack_struct(protocol.RunEpochsRequest,
                                    epochs=rng.choice([0, 1, 1, 2, 3]))
        return cmd, b""

    def bad_payload(self):
        """A well-framed request whose payload is the wrong size or out of range."""
        cmd, payload = self.valid_request()
        rng = self.rng
        if cmd == Cmd.RESET:
            return cmd, b"\x00"
        how = rng.choice(["cut", "extend", "random"])
        if how == "cut" and payload:
            payload = payload[:rng.randrange(len(payload))]
        elif how == "extend":
            payload += bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        else:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        if cmd == Cmd.TRAIN_STREAM and self.compact() and len(payload) % WB == 0:
            payload += b"\x00"          # see compact(): BAD_LENGTH rather than random words
        return cmd, payload

    def body(self, cmd, payload, length=None):
        """A request body with a correct CRC (``length`` may lie)."""
        length = len(payload) if length is None else length
        body = bytes((protocol._int(cmd), self.next_seq())) + length.to_bytes(2, "little") \
            + payload
        return body + crc16(body).to_bytes(2, "little")

    def framed(self, body):
        return bytes((FEND,)) + stuff(body) + bytes((FEND,))

    def garbage(self, n):
        rng = self.rng
        return bytes(rng.choice([FEND, FESC, TFEND, TFESC, rng.randrange(256),
                                 rng.randrange(256), rng.randrange(256)]) for _ in range(n))

    async def case(self, category):
        """Run one case of ``category``."""
        rng = self.rng
        self.counts[category] += 1
        if category == "valid":
            cmd, payload = self.valid_request()
            await self.request(cmd, payload)
        elif category == "bad_payload":
            cmd, payload = self.bad_payload()
            await self.request(cmd, payload)
        elif category == "unknown_opcode":
            cmd = rng.choice([0x00, 0x0B, 0x0C, 0x7F, 0x80, 0xC0, 0xDB, 0xFF,
                              rng.randint(0x0B, 0xFF)])
            await self.request(cmd, bytes(rng.randrange(256) for _ in range(rng.randint(0, 9))))
        elif category == "mutated":
            cmd, payload = self.valid_request()
            frame = bytearray(encode_frame(cmd, self.next_seq(), payload))
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(1, len(frame) - 1)
                if rng.random() < 0.5:
                    frame[i] ^= 1 << rng.randrange(8)
                else:
                    frame[i] = rng.choice([FEND, FESC, TFEND, rng.randrange(256)])
            await self.exchange(bytes(frame), chunk=8, gap=48)
        elif category == "length_lie":
            cmd, payload = self.valid_request()
            lie = rng.choice([len(payload) + rng.randint(1, 4), max(0, len(payload) - 1),
                              rng.randrange(0x10000), 0xFFFF, MAX_PAYLOAD + 1])
            if lie == len(payload):
                lie += 1
            await self.exchange(self.framed(self.body(cmd, payload, lie)))
        elif category == "truncated":
            cmd, payload = self.valid_request()
            frame = encode_frame(cmd, self.next_seq(), payload)
            await self.exchange(frame[:rng.randrange(1, len(frame) - 1)])
        elif category == "garbage":
            await self.exchange(self.garbage(rng.randint(1, 80)), chunk=8, gap=48)
            cmd, payload = self.valid_request()
            await self.request(cmd, payload)
        elif category == "oversized":
            k = rng.choice([MAX_PAYLOAD + 1, MAX_PAYLOAD + WB, MAX_PAYLOAD + 40])
            await self.request(rng.choice([Cmd.TRAIN_STREAM, Cmd.STORE_DATA, Cmd.LOAD_MODEL]),
                               bytes(rng.randrange(256) for _ in range(k)))
        elif category == "bad_escape":
            cmd, payload = self.valid_request()
            frame = bytearray(encode_frame(cmd, self.next_seq(), payload))
            i = rng.randrange(1, len(frame) - 1)
            frame[i:i + 1] = bytes((FESC, rng.choice([0x00, 0x41, FESC, 0xDE, 0xFF])))
            await self.exchange(bytes(frame))
        elif category == "runt":
            body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
            await self.exchange(self.framed(body))
        elif category == "retry":
            frame = self.last_frame
            (last,) = FrameDecoder().feed(frame)
            cached = self.model._last is not None and self.model._last[:2] == (last.cmd,
                                                                               last.seq)
            if not cached and (
                    (self.model.state == DeviceState.STREAMING
                     and last.cmd in (Cmd.LOAD_MODEL, Cmd.READ_MODEL, Cmd.LOAD_LEVELS))
                    or (self.compact() and last.cmd in (Cmd.TRAIN_STREAM, Cmd.RUN_EPOCHS))):
                frame = encode_frame(Cmd.READ_STATUS, self.next_seq())
            await self.exchange(frame)

    async def timeout_case(self):
        """A partial frame, then silence past the frame timeout: dropped without an answer;
        the frame that follows is served normally."""
        cmd, payload = self.valid_request()
        frame = encode_frame(cmd, self.next_seq(), payload)
        await self.exchange(frame[:-1])
        await self.cycles(TIMEOUT_CYCLES + 100)
        self.model.line_idle()
        await self.exchange(frame[-1:] + encode_frame(Cmd.READ_STATUS, self.next_seq()))


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


def make_rows(n_rows, n, fmt, seed):
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 1 << fmt.field_bits, (n_rows, n), dtype=np.uint32)
    labels = rng.integers(-(1 << 22), 1 << 22, n_rows).astype(np.int32)
    return np.ascontiguousarray(pack_rows(fields, labels, W, fmt), "<u4")


@cocotb.test()
async def fuzz(dut):
    """FUZZ_FRAMES cases by category against the Python device; then the device identifies
    itself, rejected frames have left model and memory alone, and a clean run is golden."""
    fz = Fuzzer(dut)
    await fz.start()
    names = list(CATEGORIES)
    weights = [CATEGORIES[c] for c in names]
    timeouts = 0
    for i in range(FRAMES):
        await fz.case(fz.rng.choices(names, weights)[0])
        if i % 500 == 499:
            await fz.check_model()
            if i == FRAMES // 2 - 1 or (FRAMES < 1000 and not timeouts):   # ~12 s each
                await fz.timeout_case()
                timeouts += 1
    await fz.request(Cmd.READ_STATUS)
    await fz.check_model()

    # The device still identifies itself.
    got = await fz.request(Cmd.IDENTIFY)
    info = unpack_struct(protocol.IdentifyReply, got.payload)
    assert info["magic"] == protocol.MAGIC and info["build_id"] == BUILD_ID

    # Rejected frames leave no trace: a known model and a stored epoch, then only frames that
    # fail (bad CRC, lying lengths, bad arguments, wrong state); the model reads back unchanged
    # and training over the stored words is the golden run over the clean data.
    rng = fz.rng
    fmt, n, rows = Format(Encoding.PAIR, 3), 9, 12
    cfg = dict(n_features=n, batch=2, rows_per_epoch=rows, lr=1 << 18, encoding=fmt.encoding,
               bits=fmt.bits, levels=fmt.levels, loss=Loss.SQUARED, delay=0, lr_decay_epochs=0)
    data = make_rows(rows, n, fmt, 5)
    w0 = fz.nrng.integers(-(1 << 24), 1 << 24, n).astype("<i4")
    assert (await fz.request(Cmd.RESET)).status == Status.OK
    assert (await fz.request(Cmd.CONFIGURE, pack_struct(protocol.ConfigureRequest,
                                                        **cfg))).status == Status.OK
    assert (await fz.request(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=0)
                             + w0.tobytes())).status == Status.OK
    assert (await fz.request(Cmd.STORE_DATA, pack_struct(protocol.StoreDataHeader, offset=0)
                             + data.tobytes())).status == Status.OK
    rejected = 0
    for _ in range(300):
        cmd = rng.choice([Cmd.LOAD_MODEL, Cmd.STORE_DATA, Cmd.CONFIGURE, Cmd.LOAD_LEVELS,
                          Cmd.RESET])
        payload = {Cmd.LOAD_MODEL: pack_struct(protocol.ModelOffset, offset=rng.randint(0, 3))
                   + bytes(rng.randrange(256) for _ in range(4 * rng.randint(1, n))),
                   Cmd.STORE_DATA: pack_struct(protocol.StoreDataHeader, offset=0)
                   + bytes(rng.randrange(256) for _ in range(WB * rng.randint(1, 20))),
                   Cmd.CONFIGURE: configure_payload(rng),
                   Cmd.LOAD_LEVELS: bytes(rng.randrange(256) for _ in range(16)),
                   Cmd.RESET: b""}[cmd]
        how = rng.choice(["crc", "lie", "bad", "runt"])
        if how == "crc":
            frame = bytearray(fz.body(cmd, payload))
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            frame = fz.framed(frame)
        elif how == "lie":
            lie = len(payload) + rng.choice([-1, 1, 4] if payload else [1, 4])
            frame = fz.framed(fz.body(cmd, payload, lie))
        elif how == "bad":
            bad = {Cmd.LOAD_MODEL: pack_struct(protocol.ModelOffset, offset=n) + bytes(4),
                   Cmd.STORE_DATA: pack_struct(protocol.StoreDataHeader, offset=rows * 99)
                   + bytes(WB),
                   Cmd.CONFIGURE: configure_payload(rng, valid=False),
                   Cmd.LOAD_LEVELS: np.array([3, 2, 1, 0], "<i2").tobytes(),
                   Cmd.RESET: b"\x00"}[cmd]
            frame = encode_frame(cmd, fz.next_seq(), bad)
        else:
            frame = fz.framed(bytes(rng.randrange(256) for _ in range(rng.randint(1, 5))))
        got = await fz.exchange(frame)
        assert all(g.status != Status.OK for g in got), got
        rejected += 1
    s = unpack_struct(protocol.StatusReply, (await fz.request(Cmd.READ_STATUS)).payload)
    assert (s["state"], s["stored_words"], s["rows"]) == (DeviceState.IDLE, len(data), 0), s
    got = await fz.request(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=0,
                                                       count=n))
    assert got.payload == w0.tobytes(), "a rejected frame changed the model"
    assert (await fz.request(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest,
                                                         epochs=2))).status == Status.OK
    golden = GoldenDevice(width=W, n_max=N_MAX, batch_max=BATCH_MAX)
    golden.configure(fz.model.golden.config)
    golden.load_model(w0.astype(np.int64))
    golden.run_epochs(data, 2)
    got = await fz.request(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=0,
                                                       count=n))
    assert (np.frombuffer(got.payload, "<i4") == golden.read_model()).all(), \
        "training over the stored words is not the golden run: memory changed"

    # A clean streamed run gives the golden model's words.
    assert (await fz.request(Cmd.CONFIGURE, pack_struct(protocol.ConfigureRequest,
                                                        **cfg))).status == Status.OK
    golden.configure(fz.model.golden.config)
    per = MAX_PAYLOAD // WB
    stream = np.concatenate([data] * 3)
    for pos in range(0, len(stream), per):
        assert (await fz.request(Cmd.TRAIN_STREAM,
                                 stream[pos:pos + per].tobytes())).status == Status.OK
    golden.process(stream)
    got = await fz.request(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=0,
                                                       count=n))
    assert (np.frombuffer(got.payload, "<i4") == golden.read_model()).all()

    report = {"frames": FRAMES, "by_category": fz.counts, "timeouts": timeouts,
              "responses": fz.responses, "statuses": fz.statuses,
              "model_checks": fz.model_checks, "rejected_probe": rejected,
              "model_device_stats": fz.model.stats, "decoder_stats": fz.model._decoder.stats}
    dut._log.info("fuzz report: %s", json.dumps(report))
    if REPORT:
        with open(REPORT, "w") as f:
            json.dump(report, f, indent=1)
