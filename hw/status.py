"""The device's status counters, kept a byte at a time in block RAM, and snapshots of its status
reply read back a byte at a time.

A pointer goes round the bytes of :class:`~zipml.protocol.StatusReply`, one per cycle. Events
count into small pending counters; each round adds a counter's pending count into its bytes in
block RAM, carrying from byte to byte. A snapshot round also writes every byte of the reply (the
counters with their pending counts added, the other fields from ``fields``) to a second block
RAM, which the reply is read from. Neither RAM needs a flip-flop per bit: this is what keeps the
status of the iCE40 build small.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..protocol import StatusReply, struct_bytes
from .lanes import BLOCK_RAM
from .ram import unchecked_read_port

__all__ = ["COUNTERS", "CONSTANTS_AT", "StatusBank"]

#: The :class:`~zipml.protocol.StatusReply` fields a :class:`StatusBank` counts, in the order
#: of its ``inc`` bits.
COUNTERS = ("rows", "epochs", "saturated_rows", "cycles")

_BYTES = struct_bytes(StatusReply)

#: Where a :class:`StatusBank`'s constant bytes start, after its snapshot.
CONSTANTS_AT = _BYTES
_PENDING_BITS = ceil_log2(_BYTES) + 1      # a round's events, at most one per cycle


class StatusBank(wiring.Component):
    """Wrapping event counters and snapshots of :class:`~zipml.protocol.StatusReply`.

    A snapshot asked for with ``snap`` is taken by the next whole round (at most 2 * 32 + 2
    cycles): each counter as it stands when the round reaches its lowest byte, the other fields
    from ``fields``, which must hold still while ``busy``. The read port then reads it at
    addresses 0 .. 31 and ``constants`` (reply bytes fixed at build time) from
    :data:`CONSTANTS_AT` (32) on.

    Parameters
    ----------
    constants : bytes
        Read-only bytes after the snapshot.

    Members
    -------
    inc : In(len(COUNTERS))
        One event per counter (cycle).
    clear : In(1)
        Every counter to 0 (this cycle's events are not counted).
    fields : In(StatusReply)
        The reply's other fields (its counter fields are not read).
    snap : In(1)
        Take a snapshot.
    busy : Out(1)
        A snapshot is asked for or under way.
    rd_addr : In(range(CONSTANTS_AT + len(constants)))
    rd_en : In(1)
    rd_data : Out(8)
        The byte at ``rd_addr``, a cycle after ``rd_en``.
    """

    def __init__(self, constants=b""):
        self.constants = bytes(constants)
        self.depth = CONSTANTS_AT + len(self.constants)
        super().__init__({
            "inc": In(len(COUNTERS)),
            "clear": In(1),
            "fields": In(StatusReply),
            "snap": In(1),
            "busy": Out(1),
            "rd_addr": In(range(self.depth)),
            "rd_en": In(1),
            "rd_data": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        layout = data.Layout.cast(StatusReply)
        counters = [(layout[name].offset // 8, layout[name].width // 8) for name in COUNTERS]

        m.submodules.live = live = memory.Memory(shape=8, depth=_BYTES, init=[],
                                                 attrs=BLOCK_RAM)
        m.submodules.shot = shot = memory.Memory(
            shape=8, depth=self.depth, init=[0] * CONSTANTS_AT + list(self.constants),
            attrs=BLOCK_RAM)
        # (the round reads `ptr` and writes `at`, the byte before; the snapshot is read only
        # while no round writes it)
        live_wr, shot_wr = live.write_port(), shot.write_port()
        live_rd = unchecked_read_port(m, live, live_wr, platform, "live_rd")
        shot_rd = unchecked_read_port(m, shot, shot_wr, platform, "shot_rd")
        m.d.comb += [shot_rd.addr.eq(self.rd_addr), shot_rd.en.eq(self.rd_en),
                     self.rd_data.eq(shot_rd.data)]

        # round stage 1: the byte at `ptr` is read; stage 2: it comes out of the RAM at `at`
        ptr = Signal(range(_BYTES))
        at = Signal(range(_BYTES))
        asked = Signal()                    # a snapshot waits for the next round
        shooting = Signal()                 # stage 1 is in a snapshot round
        writing = Signal()                  # ... stage 2
        m.d.comb += [live_rd.addr.eq(ptr),
                     self.busy.eq(asked | shooting | writing | shot_wr.en)]
        m.d.sync += [ptr.eq(Mux(ptr == _BYTES - 1, 0, ptr + 1)), at.eq(ptr),
                     writing.eq(shooting)]
        with m.If(ptr == _BYTES - 1):
            m.d.sync += [shooting.eq(asked | self.snap), asked.eq(0)]
        with m.Elif(self.snap):
            m.d.sync += asked.eq(1)

        # which counter's byte `at` is: lowest, highest or other
        which = Signal(range(len(COUNTERS)))
        counted, lowest, highest = Signal(), Signal(), Signal()
        with m.Switch(at):
            for i, (first, size) in enumerate(counters):
                for byte in range(first, first + size):
                    with m.Case(byte):
                        m.d.comb += [which.eq(i), counted.eq(1), lowest.eq(byte == first),
                                     highest.eq(byte == first + size - 1)]

        pending = [Signal(_PENDING_BITS, name=f"pending_{name}") for name in COUNTERS]
        cleared = Signal(len(COUNTERS))     # the RAM's bytes of a counter stand for 0
        armed = Signal(len(COUNTERS))       # ... and this round writes all of them from 0
        carry = Signal()
        add = Mux(lowest, Cat(pending).word_select(which, _PENDING_BITS), carry)
        total = Mux(cleared.bit_select(which, 1), 0, live_rd.data) + add
        m.d.sync += carry.eq(total[8] & counted)
        # both RAMs are written a cycle later, from registers (a block RAM's output, an addition
        # and a select in front of another block RAM's input are a long path on ECP5): the
        # live byte is read again a round later, and busy covers the snapshot's last byte
        m.d.sync += [live_wr.addr.eq(at), live_wr.data.eq(total[:8]), live_wr.en.eq(counted),
                     shot_wr.addr.eq(at), shot_wr.en.eq(writing),
                     shot_wr.data.eq(Mux(counted, total[:8],
                                         self.fields.as_value().word_select(at, 8)))]

        for i, count in enumerate(pending):
            mine = counted & (which == i)
            with m.If(mine & lowest):       # added in this cycle
                m.d.sync += [count.eq(self.inc[i]), armed[i].eq(cleared[i])]
            with m.Else():
                m.d.sync += count.eq(count + self.inc[i])
            with m.If(mine & highest & armed[i]):
                m.d.sync += cleared[i].eq(0)
        with m.If(self.clear):
            m.d.sync += [cleared.eq(-1), armed.eq(0), carry.eq(0),
                         *(count.eq(0) for count in pending)]
        return m
