"""The resident data memory behind STORE_DATA and RUN_EPOCHS.

The device sees a write port and a read-out stream, nothing else. Writes (STORE_DATA) and
read-outs (RUN_EPOCHS) never overlap, since the device refuses STORE_DATA while epochs run, so
both ports share one address: a single-port memory holds the words, and ``synth_ice40 -spram``
puts them in the iCE40UP5K's SPRAM (16 bits x 16K per block), ECP5 builds in block RAM.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ResidentMemory"]


class ResidentMemory(wiring.Component):
    """``depth`` words of ``width`` bits: written word by word, read out as a stream.

    A ``start`` pulse reads words ``0 .. length - 1`` out on ``o_stream``, one per cycle while
    the consumer is ready (the read port's data register is the output stage, so back-pressure
    costs no bubble). A new ``start`` abandons a read-out in progress. A write takes the
    memory's one address for its cycle: write only while no read-out is under way.

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
        ptr = Signal(range(self.depth + 1))
        end = Signal(range(self.depth + 1))
        fetch = ~self.o_stream.valid | self.o_stream.ready
        addr = Mux(self.w_en, self.w_addr, ptr)
        m.d.comb += [wr.addr.eq(addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                     rd.addr.eq(addr), rd.en.eq(fetch & ~self.w_en),
                     self.o_stream.payload.eq(rd.data)]
        with m.If(self.start):
            m.d.sync += [ptr.eq(0), end.eq(self.length), self.o_stream.valid.eq(0)]
        with m.Elif(fetch):
            m.d.sync += self.o_stream.valid.eq(ptr != end)
            with m.If(ptr != end):
                m.d.sync += ptr.eq(ptr + 1)
        return m
