"""cocotb test of the resident memory (a ``ResidentMemory`` top from test_resident.py): words
written in random order read out in address order under random back-pressure, across the
boundary between memory blocks, with read-outs cut short by a new start, and rewritten words
read again.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

WIDTH = int(os.environ["WIDTH"])
WORDS = int(os.environ["WORDS"])          # addresses 0 .. WORDS - 1 are written
BOUNDARY = int(os.environ["BOUNDARY"])    # the first word of the second memory block


class TB:
    def __init__(self, dut, seed):
        self.dut = dut
        self.rng = random.Random(seed)
        self.mem = {}

    def word(self):
        return self.rng.getrandbits(WIDTH)

    async def write(self, pairs):
        dut = self.dut
        for addr, value in pairs:
            dut.w_addr.value = addr
            dut.w_data.value = value
            dut.w_en.value = 1
            await RisingEdge(dut.clk)
            self.mem[addr] = value
        dut.w_en.value = 0

    async def read_out(self, length, cut=None):
        """Read ``length`` words (or for ``cut`` cycles) with random back-pressure."""
        dut = self.dut
        dut.length.value = length
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        out, cycles = [], 0
        while (len(out) < length) if cut is None else (cycles < cut):
            ready = self.rng.random() < 0.7
            dut.o_stream__ready.value = ready
            await ReadOnly()
            if ready and dut.o_stream__valid.value:
                out.append(int(dut.o_stream__payload.value))
            await RisingEdge(dut.clk)
            cycles += 1
            assert cycles < 4 * length + 16, "read-out stalled"
        dut.o_stream__ready.value = 0
        await ClockCycles(dut.clk, 3)
        await ReadOnly()
        if cut is None:
            assert not dut.o_stream__valid.value, "a word beyond the last one"
        await RisingEdge(dut.clk)
        expected = [self.mem[a] for a in range(len(out))]
        assert out == expected, f"read-out of {length} words differs"
        return out


@cocotb.test()
async def test_read_out_follows_writes(dut):
    tb = TB(dut, 1)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("w_en", "start", "o_stream__ready"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    order = list(range(WORDS))
    tb.rng.shuffle(order)
    await tb.write((a, tb.word()) for a in order)
    await tb.read_out(WORDS)
    await tb.read_out(5)
    assert len(await tb.read_out(WORDS, cut=40)) > 0
    await tb.read_out(0)
    await tb.read_out(1)
    # rewrite words on both sides of the block boundary, then read through them again
    await tb.write((a, tb.word()) for a in range(BOUNDARY - 4, BOUNDARY + 4))
    await tb.read_out(WORDS)
