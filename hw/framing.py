"""Gateware for the frame format of :mod:`zipml.protocol`: a receiver, an encoder and a
transmitter.

The receiver buffers payloads and releases a frame only after its CRC checked, so no unverified
byte ever reaches a consumer, and a rejected frame leaves no trace beyond a counter. The encoder
frames a stream of bytes (the last one marked); the transmitter feeds it a header and payload.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..protocol import (
    CRC,
    CRC_BYTES,
    FEND,
    FESC,
    REQUEST_HEADER_BYTES,
    RESPONSE_HEADER_BYTES,
    TFEND,
    TFESC,
    Header,
    Status,
)
from .lanes import BLOCK_RAM
from .ram import unchecked_read_port

__all__ = ["FrameReceiver", "FrameByte", "FrameEncoder", "FrameTransmitter"]


class _HeaderFIFO(fifo.SyncFIFOBuffered):
    """:class:`~amaranth.lib.fifo.SyncFIFOBuffered` with its storage in block RAM on iCE40 (a
    40-bit header FIFO in flip-flops costs more logic cells than three of its 30 EBRs). Elsewhere
    yosys picks: on ECP5 LUT RAM and a register, so the dispatcher's decisions on a header start
    at a flip-flop, not 5.8 ns after the clock at a block RAM's output across the part."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        if getattr(platform, "family", None) == "iCE40":
            m.submodules.storage.attrs.update(BLOCK_RAM)
        return m


class FrameReceiver(wiring.Component):
    """Request frames in, verified frames out.

    Incoming bytes are unstuffed and checked on the fly; payload bytes go into a ring buffer of
    ``2**ceil_log2(max_payload)`` bytes at a tentative write pointer. At the closing FEND the
    frame's verdict is pushed to ``o_header``; only a good frame (``status == OK``) moves the
    committed pointer forward and so makes its payload readable on ``o_payload``, a rejected one
    rolls the tentative pointer back. Since the ring is shared, a frame can arrive while the
    consumer still reads the previous one; if it does not fit in the free space it is rejected
    with BUSY. The receiver never applies back-pressure (``i_stream.ready`` is always 1).

    Consumer contract: pop a header from ``o_header``, then take exactly ``length`` bytes from
    ``o_payload`` (``length`` is 0 for every status but OK). Payload bytes of committed frames
    follow each other with no separator, in the order of the headers.

    Resynchronisation follows :mod:`zipml.protocol`: hunting for FEND at reset, after ``timeout``
    cycles with no byte, and after a bad escape; runts, bad escapes and timed-out partial frames
    are dropped without a header.

    Parameters
    ----------
    max_payload : int
        Longest payload accepted; longer ones are rejected with TOO_LARGE.
    timeout : int
        Clock cycles of input silence after which a partial frame is dropped (at least 2).
    header_depth : int
        Headers that can wait for the consumer; a frame finishing when all are taken is dropped.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes from the line.
    o_header : Out(stream.Signature(Header))
        One per delimited frame of at least header + CRC bytes: ``status`` is OK, BAD_CRC,
        BAD_LENGTH, TOO_LARGE or BUSY; ``cmd`` and ``seq`` as received.
    o_payload : Out(stream.Signature(8))
        Payload bytes of good frames.
    frames_ok, frames_rejected, frames_dropped : Out(16)
        Wrapping counts of good frames, frames answered with an error status, and frames dropped
        silently (runts, bad escapes, timeouts, no room for the header).
    """

    def __init__(self, *, max_payload=1024, timeout, header_depth=4):
        if not 1 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be 1..65535, not {max_payload}")
        if timeout < 2:
            raise ValueError(f"timeout must be at least 2 cycles, not {timeout}")
        self.max_payload = max_payload
        self.timeout = timeout
        self.header_depth = header_depth
        self.depth = max(2, 1 << ceil_log2(max_payload))
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_header": Out(stream.Signature(Header)),
            "o_payload": Out(stream.Signature(8)),
            "frames_ok": Out(16),
            "frames_rejected": Out(16),
            "frames_dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        hdr_bytes = REQUEST_HEADER_BYTES
        limit = hdr_bytes + 0xFFFF + CRC_BYTES      # longest body a 16-bit length can describe
        abits = ceil_log2(self.depth)

        m.submodules.crc = crc = CRC.create()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=self.depth, init=[])
        wr = mem.write_port()
        # (a byte is written only while the ring has room, so at the read address only when
        # the ring is empty, and then the read is not used)
        rd = unchecked_read_port(m, mem, wr, platform, "rd")
        m.submodules.headers = headers = _HeaderFIFO(
            width=Header.as_shape().size, depth=self.header_depth)

        # Ring pointers, one bit wider than the address: tentative write, committed write, read.
        wp = Signal(abits + 1)
        wc = Signal(abits + 1)
        rp = Signal(abits + 1)
        used = Signal(abits + 1)
        m.d.comb += used.eq(wp - rp)

        # --- read side: committed bytes only ------------------------------------------------
        fetch = ~self.o_payload.valid | self.o_payload.ready
        m.d.comb += [
            rd.addr.eq(rp[:abits]),
            rd.en.eq(fetch),
            self.o_payload.payload.eq(rd.data),
        ]
        with m.If(fetch):
            m.d.sync += self.o_payload.valid.eq(rp != wc)
            with m.If(rp != wc):
                m.d.sync += rp.eq(rp + 1)

        m.d.comb += [
            self.o_header.payload.eq(headers.r_data),
            self.o_header.valid.eq(headers.r_rdy),
            headers.r_en.eq(self.o_header.ready),
        ]

        # --- write side -----------------------------------------------------------------------
        hunting = Signal(init=1)
        escape = Signal()
        count = Signal(range(limit + 1))   # body bytes so far, saturating
        overlong = Signal()
        overflow = Signal()                 # a payload byte found the ring full
        # The length tests, kept up to date byte by byte (the verdict reads registers only):
        # the body bytes still owed once the length is known (its last byte is taken with the
        # body's sixth byte), whether none is, and whether the payload is too large.
        owed = Signal(17)
        len_ok = Signal()
        too_large = Signal()
        d0 = Signal(8)                      # the last two body bytes: the CRC, at the end
        d1 = Signal(8)
        cmd = Signal(8)
        seq = Signal(8)
        length = Signal(16)

        idle = Signal(range(self.timeout + 1))
        # idle == timeout - 1 and idle == timeout, kept as registers (the timeout's compares
        # feed the frame's drop, which reaches most of the write side)
        expiring, expired = Signal(), Signal()
        byte = self.i_stream.payload
        m.d.comb += self.i_stream.ready.eq(1)

        data = Signal(8)
        data_valid = Signal()
        frame_end = Signal()
        drop = Signal()                     # abandon the frame silently and hunt

        with m.If(self.i_stream.valid):
            m.d.sync += [idle.eq(0), expiring.eq(0), expired.eq(0)]     # (timeout >= 2)
            with m.If(byte == FEND):
                m.d.comb += frame_end.eq(~hunting & ~escape & (count != 0))
                with m.If(~hunting & escape):
                    m.d.sync += self.frames_dropped.eq(self.frames_dropped + 1)
                m.d.comb += crc.start.eq(1)
                m.d.sync += [hunting.eq(0), escape.eq(0), count.eq(0), overlong.eq(0),
                             overflow.eq(0), wp.eq(wc)]
            with m.Elif(hunting):
                pass
            with m.Elif(escape):
                m.d.sync += escape.eq(0)
                with m.If((byte == TFEND) | (byte == TFESC)):
                    m.d.comb += [data.eq(Mux(byte == TFEND, FEND, FESC)), data_valid.eq(1)]
                with m.Else():
                    m.d.comb += drop.eq(1)
            with m.Elif(byte == FESC):
                m.d.sync += escape.eq(1)
            with m.Else():
                m.d.comb += [data.eq(byte), data_valid.eq(1)]
        with m.Elif(~expired):
            m.d.sync += [idle.eq(idle + 1), expiring.eq(idle == self.timeout - 2),
                         expired.eq(expiring)]
            with m.If(expiring & ~hunting):
                m.d.comb += drop.eq((count != 0) | escape)
                m.d.sync += [hunting.eq(1), escape.eq(0)]

        with m.If(drop):
            m.d.sync += [self.frames_dropped.eq(self.frames_dropped + 1), hunting.eq(1),
                         escape.eq(0), wp.eq(wc)]

        # (the write port's address and data are registers: only its enable is logic)
        m.d.comb += [wr.addr.eq(wp[:abits]), wr.data.eq(d1)]
        with m.If(data_valid):
            m.d.comb += [crc.valid.eq(1), crc.data.eq(data)]
            m.d.sync += [d0.eq(data), d1.eq(d0)]
            with m.If(count == limit):
                m.d.sync += overlong.eq(1)
            with m.Else():
                m.d.sync += count.eq(count + 1)
            # The byte two places back is no longer a candidate for the CRC: keep it.
            leaving = count - 2
            with m.If(count >= 2):
                with m.Switch(leaving):
                    with m.Case(0):
                        m.d.sync += cmd.eq(d1)
                    with m.Case(1):
                        m.d.sync += seq.eq(d1)
                    with m.Case(2):
                        m.d.sync += length[:8].eq(d1)
                    with m.Case(3):
                        full = Cat(length[:8], d1)
                        m.d.sync += [length[8:].eq(d1), owed.eq(full), len_ok.eq(full == 0),
                                     too_large.eq(full > self.max_payload)]
                    with m.Default():
                        m.d.sync += [owed.eq(owed - 1), len_ok.eq(owed == 1)]
                        with m.If(used != self.depth):
                            m.d.comb += wr.en.eq(1)
                            m.d.sync += wp.eq(wp + 1)
                        with m.Else():
                            m.d.sync += overflow.eq(1)

        # --- verdict at the closing FEND --------------------------------------------------
        status = Signal(Status)
        with m.If(overlong):
            m.d.comb += status.eq(Status.BAD_LENGTH)
        with m.Elif(~crc.match_detected):
            m.d.comb += status.eq(Status.BAD_CRC)
        with m.Elif(~len_ok):
            m.d.comb += status.eq(Status.BAD_LENGTH)
        with m.Elif(too_large):
            m.d.comb += status.eq(Status.TOO_LARGE)
        with m.Elif(overflow):
            m.d.comb += status.eq(Status.BUSY)
        with m.Else():
            m.d.comb += status.eq(Status.OK)

        verdict = Signal(Header)
        m.d.comb += [
            verdict.status.eq(status),
            verdict.cmd.eq(cmd),
            verdict.seq.eq(seq),
            verdict.length.eq(Mux(status == Status.OK, length, 0)),
            headers.w_data.eq(verdict),
        ]
        with m.If(frame_end):
            with m.If(count < hdr_bytes + CRC_BYTES):
                m.d.sync += self.frames_dropped.eq(self.frames_dropped + 1)
            with m.Elif(~headers.w_rdy):
                m.d.sync += self.frames_dropped.eq(self.frames_dropped + 1)
            with m.Else():
                m.d.comb += headers.w_en.eq(1)
                with m.If(status == Status.OK):
                    # Commit; this overrides the rollback every FEND does above.
                    m.d.sync += [wc.eq(wp), wp.eq(wp),
                                 self.frames_ok.eq(self.frames_ok + 1)]
                with m.Else():
                    m.d.sync += self.frames_rejected.eq(self.frames_rejected + 1)
        return m


#: A byte of a frame for :class:`FrameEncoder`: header or payload, ``last`` on the frame's last.
FrameByte = data.StructLayout({"data": 8, "last": 1})


class FrameEncoder(wiring.Component):
    """A frame's bytes in, stuffed and delimited frame bytes (with CRC) out.

    Members
    -------
    i_stream : In(stream.Signature(FrameByte))
        The frame's header and payload bytes, its last one marked.
    o_stream : Out(stream.Signature(8))
        Frame bytes for the line: FEND, stuffed body, CRC, FEND.
    """

    def __init__(self):
        super().__init__({
            "i_stream": In(stream.Signature(FrameByte)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC.create()
        index = Signal(range(CRC_BYTES))

        # The byte to send now, whether it is a delimiter (sent raw), and whether it is there.
        byte = Signal(8)
        raw = Signal()
        have = Signal()
        advance = Signal()                  # the byte has gone out (both halves, if escaped)
        pending = Signal()                  # FESC went out, its transposed byte is next

        special = ~raw & ((byte == FEND) | (byte == FESC))
        with m.If(pending):
            m.d.comb += [self.o_stream.payload.eq(Mux(byte == FEND, TFEND, TFESC)),
                         self.o_stream.valid.eq(1)]
            with m.If(self.o_stream.ready):
                m.d.sync += pending.eq(0)
                m.d.comb += advance.eq(1)
        with m.Else():
            m.d.comb += [self.o_stream.payload.eq(Mux(special, FESC, byte)),
                         self.o_stream.valid.eq(have)]
            with m.If(have & self.o_stream.ready):
                with m.If(special):
                    m.d.sync += pending.eq(1)
                with m.Else():
                    m.d.comb += advance.eq(1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.i_stream.valid):
                    m.d.comb += crc.start.eq(1)
                    m.d.sync += index.eq(0)
                    m.next = "OPEN"
            with m.State("OPEN"):
                m.d.comb += [byte.eq(FEND), raw.eq(1), have.eq(1)]
                with m.If(advance):
                    m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += [byte.eq(self.i_stream.payload.data), have.eq(self.i_stream.valid),
                             self.i_stream.ready.eq(advance),
                             crc.data.eq(byte), crc.valid.eq(advance)]
                with m.If(advance & self.i_stream.payload.last):
                    m.next = "CRC"
            with m.State("CRC"):
                m.d.comb += [byte.eq(crc.crc.word_select(index, 8)), have.eq(1)]
                with m.If(advance):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == CRC_BYTES - 1):
                        m.next = "CLOSE"
            with m.State("CLOSE"):
                m.d.comb += [byte.eq(FEND), raw.eq(1), have.eq(1)]
                with m.If(advance):
                    m.next = "IDLE"
        return m


class FrameTransmitter(wiring.Component):
    """Response header and payload in, stuffed and delimited frame bytes (with CRC) out: the
    header's bytes and the payload's to a :class:`FrameEncoder`.

    Members
    -------
    i_header : In(stream.Signature(Header))
        One response; accepted once the previous one's bytes are in the encoder.
    i_payload : In(stream.Signature(8))
        Exactly ``length`` bytes per header, taken as they are sent.
    o_stream : Out(stream.Signature(8))
        Frame bytes for the line: FEND, stuffed body, FEND.
    """

    def __init__(self):
        super().__init__({
            "i_header": In(stream.Signature(Header)),
            "i_payload": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.encoder = encoder = FrameEncoder()
        wiring.connect(m, encoder.o_stream, wiring.flipped(self.o_stream))

        header = Signal(Header)
        index = Signal(range(RESPONSE_HEADER_BYTES))
        remaining = Signal(16)
        out = encoder.i_stream

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i_header.ready.eq(1)
                with m.If(self.i_header.valid):
                    m.d.sync += [header.eq(self.i_header.payload), index.eq(0),
                                 remaining.eq(self.i_header.payload.length)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [out.valid.eq(1),
                             out.payload.data.eq(header.as_value().word_select(index, 8)),
                             out.payload.last.eq((index == RESPONSE_HEADER_BYTES - 1) &
                                                 (remaining == 0))]
                with m.If(out.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == RESPONSE_HEADER_BYTES - 1):
                        with m.If(remaining == 0):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [out.valid.eq(self.i_payload.valid),
                             out.payload.data.eq(self.i_payload.payload),
                             out.payload.last.eq(remaining == 1),
                             self.i_payload.ready.eq(out.ready)]
                with m.If(out.valid & out.ready):
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 1):
                        m.next = "IDLE"
        return m
