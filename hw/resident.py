"""The resident data memory behind STORE_DATA and RUN_EPOCHS.

The device sees a write port and a read-out stream, nothing else, so the memory behind them can
change per target (``amaranth.lib.memory`` here; iCE40 SPRAM later) without touching the
dispatcher.
"""

from amaranth import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ResidentMemory"]


class ResidentMemory(wiring.Component):
    """``depth`` words of ``width`` bits: written word by word, read out as a stream.

    A ``start`` pulse reads words ``0 .. length - 1`` out on ``o_stream``, one per cycle while
    the consumer is ready (the read port's data register is the output stage, so back-pressure
    costs no bubble). A new ``start`` abandons a read-out in progress.

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.

    Members
    -------
    w_addr : In(range(depth))
    w_data : In(width)
    w_en : In(1)
        Write ``w_data`` at ``w_addr``.
    start : In(1)
        Begin a read-out of ``length`` words.
    length : In(range(depth + 1))
        Sampled at ``start``.
    o_stream : Out(stream.Signature(width))
        The words, in address order.
    """

    def __init__(self, width, depth):
        self.width = width
        self.depth = depth
        super().__init__({
            "w_addr": In(range(max(2, depth))),
            "w_data": In(width),
            "w_en": In(1),
            "start": In(1),
            "length": In(range(depth + 1)),
            "o_stream": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port()
        m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en)]

        ptr = Signal(range(self.depth + 1))
        end = Signal(range(self.depth + 1))
        fetch = ~self.o_stream.valid | self.o_stream.ready
        m.d.comb += [rd.addr.eq(ptr), rd.en.eq(fetch), self.o_stream.payload.eq(rd.data)]
        with m.If(self.start):
            m.d.sync += [ptr.eq(0), end.eq(self.length), self.o_stream.valid.eq(0)]
        with m.Elif(fetch):
            m.d.sync += self.o_stream.valid.eq(ptr != end)
            with m.If(ptr != end):
                m.d.sync += ptr.eq(ptr + 1)
        return m
