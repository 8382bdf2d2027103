"""cocotb test of the down-counters (``CounterPair`` from test_dsp.py): the SB_MAC16 one, under
the toolchain's model of the block, against the one in logic and a Python count, every cycle,
through loads, decrements, both at once, idle cycles, the borrow between the accumulator's
16-bit halves and the wrap below 0."""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

# values around which the halves' carry and the wrap happen
EDGES = (0, 1, 2, 0xFFFF, 0x1_0000, 0x1_0001, 0x1_0002, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF)


@cocotb.test()
async def hard_counter_follows_soft(dut):
    rng = random.Random(7)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.load.value = dut.dec.value = dut.value.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await ReadOnly()
    assert int(dut.soft.value) == int(dut.hard.value) == 0, "reset"
    count, checked = 0, 0
    for _ in range(20_000):
        await RisingEdge(dut.clk)
        load = rng.random() < 0.05
        dec = rng.random() < 0.7
        value = rng.choice(EDGES) if rng.random() < 0.7 else rng.getrandbits(32)
        dut.load.value, dut.dec.value, dut.value.value = load, dec, value
        await ReadOnly()
        got = (int(dut.soft.value), int(dut.hard.value))
        assert got == (count, count), (got, count)
        checked += 1
        count = value if load else (count - 1) % (1 << 32) if dec else count
    assert checked == 20_000
