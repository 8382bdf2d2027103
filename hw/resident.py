"""The resident data memory behind STORE_DATA and RUN_EPOCHS.

The device sees a write port and a read-out stream, nothing else, so the memory behind them
changes per target without touching the dispatcher: block RAM through ``amaranth.lib.memory``,
or the single-port RAMs of the iCE40UP5K (SPRAM, 128 KiB in four blocks).
"""

from amaranth import Array, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SPRAM_WORDS", "SPRAM_BITS", "ResidentMemory"]

#: One iCE40UP5K SB_SPRAM256KA: 16,384 words of 16 bits.
SPRAM_WORDS, SPRAM_BITS = 16384, 16


class ResidentMemory(wiring.Component):
    """``depth`` words of ``width`` bits: written word by word, read out as a stream.

    A ``start`` pulse reads words ``0 .. length - 1`` out on ``o_stream``, one per cycle while
    the consumer is ready (the read port's data register is a pipeline stage, so back-pressure
    costs no bubble). A new ``start`` abandons a read-out in progress.

    In block RAM the words are kept in banks of 32-bit columns, each with its own copy of the
    read address: a copy drives one bank's block RAMs, where a single register would reach
    every block RAM of a wide memory (64 of them for 8,192 x 128 bits on ECP5).

    In SPRAM (``spram``) each block is a 16-bit column of 16,384 words; its one port writes
    while ``w_en`` and reads otherwise, so writes and read-outs must not overlap (the device
    stores data only while no run is under way).

    Parameters
    ----------
    width : int
        Bits per word.
    depth : int
        Words.
    spram : bool
        Build from iCE40UP5K SB_SPRAM256KA blocks: ``width`` a multiple of 16, ``depth`` of
        16,384.
    output_register : bool
        Register the read data before ``o_stream`` (a cycle more from ``start`` to the first
        word): the memory's output then goes no further than a flip-flop, wherever its
        consumer is placed (an ECP5 block RAM's data leaves it 5.8 ns after the clock).

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

    def __init__(self, width, depth, *, spram=False, output_register=False):
        if spram and (width % SPRAM_BITS or depth % SPRAM_WORDS):
            raise ValueError(f"SPRAM holds words of a multiple of {SPRAM_BITS} bits in a "
                             f"multiple of {SPRAM_WORDS} words, not {depth} x {width}")
        self.width = width
        self.depth = depth
        self.spram = spram
        self.output_register = output_register
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
        ptr = Signal(range(self.depth + 1))
        end = Signal(range(self.depth + 1))
        out = self.o_stream
        data = Signal(self.width)
        # the read port's data holds a word (`fetched`) and moves on (`fetch`) when the next
        # stage takes it: o_stream itself, or the output register
        if self.output_register:
            fetched = Signal()
            take = ~out.valid | out.ready
            fetch = ~fetched | take
            with m.If(self.start):
                m.d.sync += out.valid.eq(0)
            with m.Elif(take):
                m.d.sync += [out.valid.eq(fetched), out.payload.eq(data)]
        else:
            fetched = out.valid
            fetch = ~out.valid | out.ready
            m.d.comb += out.payload.eq(data)
        addrs = (self._spram(m, ptr, end, fetch, data) if self.spram else
                 self._banks(m, fetch, data))

        def set_ptr(value):
            return [ptr.eq(value), *(addr.eq(value) for addr in addrs)]

        with m.If(self.start):
            m.d.sync += [*set_ptr(0), end.eq(self.length), fetched.eq(0)]
        with m.Elif(fetch):
            m.d.sync += fetched.eq(ptr != end)
            with m.If(ptr != end):
                m.d.sync += set_ptr(ptr + 1)
        return m

    def _banks(self, m, fetch, data):
        """Block RAM in 32-bit columns, each read at its own copy of the read address (the
        build keeps ``*_replica*`` registers from being merged back into one); returns the
        copies."""
        banks = max(1, self.width // 32)
        bank_width = self.width // banks
        addrs = [Signal(range(self.depth + 1), name=f"ptr_replica{b}") for b in range(banks)]
        for b, addr in enumerate(addrs):
            bank = memory.Memory(shape=bank_width, depth=self.depth, init=[])
            m.submodules[f"bank{b}"] = bank
            wr, rd = bank.write_port(), bank.read_port()
            column = slice(b * bank_width, (b + 1) * bank_width)
            m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data[column]),
                         wr.en.eq(self.w_en), rd.addr.eq(addr), rd.en.eq(fetch),
                         data[column].eq(rd.data)]
        return addrs

    def _spram(self, m, ptr, end, fetch, data):
        """SB_SPRAM256KA blocks: a row of ``width / 16`` per 16,384 words. A read selects the
        row of ``ptr``, a write that of ``w_addr``; a block not selected keeps its output, so
        the output stage is the blocks' data and the row read last. One address serves every
        block: returns no copies."""
        low = ceil_log2(SPRAM_WORDS)
        rows = self.depth // SPRAM_WORDS
        addr = Signal(max(len(self.w_addr), len(ptr)))
        m.d.comb += addr.eq(Mux(self.w_en, self.w_addr, ptr))
        read_row = Signal(range(rows))
        with m.If(~self.start & fetch & (ptr != end)):
            m.d.sync += read_row.eq(ptr[low:])
        row_data = []
        for r in range(rows):
            row = Signal(self.width, name=f"row{r}_data")
            select = (addr[low:] == r) & (self.w_en | fetch)
            for c in range(self.width // SPRAM_BITS):
                column = slice(c * SPRAM_BITS, (c + 1) * SPRAM_BITS)
                m.submodules[f"spram{r}_{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr[:low], i_DATAIN=self.w_data[column], i_MASKWREN=0b1111,
                    i_WREN=self.w_en, i_CHIPSELECT=select, i_CLOCK=ClockSignal(),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=row[column])
            row_data.append(row)
        m.d.comb += data.eq(Array(row_data)[read_row])
        return []
