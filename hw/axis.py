"""AXI-Stream <-> byte-stream adapters: the protocol's byte stream over an XDMA streaming channel.

Ports are flat and named as AXI-Stream signals (``s_axis_tdata``, ``m_axis_tlast``, ...), the
names Xilinx IP and cocotbext-axi's ``AxiStreamBus.from_prefix`` expect.

Packet boundaries
-----------------
The XDMA driver's card-to-host read returns when ``tlast`` arrives, so the device must end each
response with ``tlast``. :class:`BytesToAXIS` finds the ends in the byte stream itself: a
:data:`~zipml.protocol.FEND` that follows a byte other than FEND closes a frame (the protocol puts
FEND only between frames, never in a body), and the beat carrying it gets ``tlast``. Every
response frame (``FEND body FEND``) therefore leaves as one AXI-Stream packet, with no extra flag
on the byte stream, so any component with a plain ``stream.Signature(8)`` output can drive it.
An optional ``flush_timeout`` also ends a packet when bytes have waited that many cycles for
more; it bounds the latency of output that is not framed (or stalls mid-frame).

Host-to-card packets carry no meaning (a host ``write`` may hold part of a frame or several):
:class:`AXISToBytes` ignores ``tlast`` and the receiver finds frames by their delimiters.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from zipml.protocol import FEND

__all__ = ["axis_members", "check_byte_core", "AXISToBytes", "BytesToAXIS", "AXISByteBridge"]


def _check_width(data_width):
    if data_width < 8 or data_width % 8:
        raise ValueError(f"data_width must be a positive multiple of 8, not {data_width}")
    return data_width // 8


def axis_members(prefix, data_width, *, master):
    """The flat members of an AXI-Stream port with tdata, tkeep, tvalid, tready and tlast.

    Parameters
    ----------
    prefix : str
        E.g. ``"s_axis"``; members are ``<prefix>_tdata`` and so on.
    data_width : int
    master : bool
        True for a master (drives ``tdata``, ``tkeep``, ``tvalid``, ``tlast``).
    """
    lanes = _check_width(data_width)
    fwd, bwd = (Out, In) if master else (In, Out)
    return {
        f"{prefix}_tdata": fwd(data_width),
        f"{prefix}_tkeep": fwd(lanes),
        f"{prefix}_tvalid": fwd(1),
        f"{prefix}_tready": bwd(1),
        f"{prefix}_tlast": fwd(1),
    }


class AXISToBytes(wiring.Component):
    """AXI-Stream slave in, one byte per cycle out, lowest lane first.

    Bytes whose ``tkeep`` bit is clear are dropped (any pattern, including null beats);
    ``tlast`` is ignored. A beat is held until its last kept byte is taken, and the next beat is
    accepted in that same cycle, so a steady stream moves one byte per cycle.

    Parameters
    ----------
    data_width : int
        ``tdata`` bits, a multiple of 8.

    Members
    -------
    s_axis_tdata, s_axis_tkeep, s_axis_tvalid, s_axis_tready, s_axis_tlast
        The AXI-Stream slave.
    o_stream : Out(stream.Signature(8))
        The bytes.
    """

    def __init__(self, data_width=64):
        self.data_width = data_width
        self.lanes = _check_width(data_width)
        super().__init__({
            **axis_members("s_axis", data_width, master=False),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        beat = Signal(self.data_width)
        keep = Signal(n)                     # lanes still to send

        lowest = Signal(n)                   # one-hot: the lane sent now
        m.d.comb += lowest.eq(keep & (~keep + 1)[:n])
        byte = 0
        for lane in range(n):
            byte = byte | Mux(lowest[lane], beat.word_select(lane, 8), 0)
        m.d.comb += [self.o_stream.payload.eq(byte), self.o_stream.valid.eq(keep != 0)]

        rest = Signal(n)                     # lanes left after this cycle
        sent = self.o_stream.valid & self.o_stream.ready
        m.d.comb += [rest.eq(Mux(sent, keep & (keep - 1)[:n], keep)),
                     self.s_axis_tready.eq(rest == 0)]
        with m.If(self.s_axis_tvalid & self.s_axis_tready):
            m.d.sync += [beat.eq(self.s_axis_tdata), keep.eq(self.s_axis_tkeep)]
        with m.Else():
            m.d.sync += keep.eq(rest)
        return m


def _beat_layout(lanes):
    return data.StructLayout({"data": 8 * lanes, "count": range(lanes + 1), "last": 1})


class BytesToAXIS(wiring.Component):
    """Bytes in, AXI-Stream master out: bytes packed lowest lane first, ``tlast`` at the end of
    every frame (see the module docstring).

    Only the last beat of a packet can be partial: its ``tkeep`` is contiguous from lane 0 (the
    XDMA's card-to-host rule). A full beat waits in the packer for the next byte, which tells
    whether the packet goes on; a closing FEND leaves with its beat one cycle after it is taken.
    Beats queue in a FIFO of ``depth`` entries.

    Parameters
    ----------
    data_width : int
        ``tdata`` bits, a multiple of 8.
    flush_timeout : int or None
        If set, bytes that have waited this many cycles with no further byte leave at once, in
        a beat with ``tlast``. None: only frame ends raise ``tlast``.
    depth : int
        Output FIFO depth, in beats.

    Members
    -------
    i_stream : In(stream.Signature(8))
        The bytes.
    m_axis_tdata, m_axis_tkeep, m_axis_tvalid, m_axis_tready, m_axis_tlast
        The AXI-Stream master.
    """

    def __init__(self, data_width=64, *, flush_timeout=None, depth=4):
        self.data_width = data_width
        self.lanes = _check_width(data_width)
        if flush_timeout is not None and flush_timeout < 1:
            raise ValueError(f"flush_timeout must be at least 1 cycle, not {flush_timeout}")
        self.flush_timeout = flush_timeout
        self.depth = depth
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            **axis_members("m_axis", data_width, master=True),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lanes
        layout = _beat_layout(n)
        m.submodules.beats = beats = fifo.SyncFIFOBuffered(width=layout.size, depth=self.depth)

        acc = Signal(self.data_width)        # the beat being packed
        count = Signal(range(n + 1))         # bytes in it
        closed = Signal()                    # it ends a frame: send it with tlast
        after_fend = Signal(init=1)          # the last byte taken was FEND (or none yet)

        expired = Signal()
        if self.flush_timeout is not None:
            idle = Signal(range(self.flush_timeout + 1))
            m.d.comb += expired.eq(idle == self.flush_timeout)
            with m.If((count == 0) | (self.i_stream.valid & self.i_stream.ready)):
                m.d.sync += idle.eq(0)
            with m.Elif(~expired):
                m.d.sync += idle.eq(idle + 1)

        flush = closed | (expired & (count != 0))
        push = Signal()
        m.d.comb += push.eq(beats.w_rdy & (flush | ((count == n) & self.i_stream.valid)))
        w_beat = data.View(layout, beats.w_data)
        m.d.comb += [
            w_beat.data.eq(acc), w_beat.count.eq(count), w_beat.last.eq(flush),
            beats.w_en.eq(push),
            self.i_stream.ready.eq(((count != n) & ~closed) | push),
        ]

        byte = self.i_stream.payload
        base = Signal(self.data_width)
        base_count = Signal(range(n + 1))
        m.d.comb += [base.eq(Mux(push, 0, acc)), base_count.eq(Mux(push, 0, count))]
        with m.If(self.i_stream.valid & self.i_stream.ready):
            merged = Signal(self.data_width)
            m.d.comb += merged.eq(base)
            m.d.comb += merged.word_select(base_count, 8).eq(byte)
            m.d.sync += [
                acc.eq(merged),
                count.eq(base_count + 1),
                closed.eq((byte == FEND) & ~after_fend),
                after_fend.eq(byte == FEND),
            ]
        with m.Elif(push):
            m.d.sync += [acc.eq(0), count.eq(0), closed.eq(0)]

        r_beat = data.View(layout, beats.r_data)
        m.d.comb += [
            self.m_axis_tdata.eq(r_beat.data),
            self.m_axis_tkeep.eq(Cat(r_beat.count > lane for lane in range(n))),
            self.m_axis_tlast.eq(r_beat.last),
            self.m_axis_tvalid.eq(beats.r_rdy),
            beats.r_en.eq(self.m_axis_tready),
        ]
        return m


class AXISByteBridge(wiring.Component):
    """A byte-stream core between an AXI-Stream slave and master:
    ``s_axis -> AXISToBytes -> core -> BytesToAXIS -> m_axis``.

    This is what sits between an XDMA's host-to-card and card-to-host channels.

    Parameters
    ----------
    core : wiring.Component
        Has ``i_stream: In(stream.Signature(8))`` and ``o_stream: Out(stream.Signature(8))``.
    data_width : int
    flush_timeout : int or None
        See :class:`BytesToAXIS`.

    Members
    -------
    s_axis_tdata, s_axis_tkeep, s_axis_tvalid, s_axis_tready, s_axis_tlast
        Bytes to the core.
    m_axis_tdata, m_axis_tkeep, m_axis_tvalid, m_axis_tready, m_axis_tlast
        Bytes from the core, a packet per frame.
    """

    def __init__(self, core, data_width=64, *, flush_timeout=None):
        check_byte_core(core)
        self.core = core
        self.data_width = data_width
        self.flush_timeout = flush_timeout
        super().__init__({
            **axis_members("s_axis", data_width, master=False),
            **axis_members("m_axis", data_width, master=True),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = AXISToBytes(self.data_width)
        m.submodules.core = self.core
        m.submodules.tx = tx = BytesToAXIS(self.data_width, flush_timeout=self.flush_timeout)
        for name in ("tdata", "tkeep", "tvalid", "tlast"):
            m.d.comb += [getattr(rx, f"s_axis_{name}").eq(getattr(self, f"s_axis_{name}")),
                         getattr(self, f"m_axis_{name}").eq(getattr(tx, f"m_axis_{name}"))]
        m.d.comb += [self.s_axis_tready.eq(rx.s_axis_tready),
                     tx.m_axis_tready.eq(self.m_axis_tready)]
        wiring.connect(m, rx.o_stream, self.core.i_stream)
        wiring.connect(m, self.core.o_stream, tx.i_stream)
        return m


def check_byte_core(core):
    """Raise TypeError unless ``core`` has byte-stream members ``i_stream`` and ``o_stream``."""
    wanted = {"i_stream": In(stream.Signature(8)), "o_stream": Out(stream.Signature(8))}
    members = getattr(getattr(core, "signature", None), "members", {})
    for name, member in wanted.items():
        if name not in members or members[name] != member:
            raise TypeError(f"{core!r} needs a member {name}: {member!r}")

