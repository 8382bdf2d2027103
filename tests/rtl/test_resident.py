"""The resident memory alone: words written at random addresses read out in order, under random
back-pressure and restarts, in Amaranth's simulator (block RAM in one bank, W = 32, and four,
W = 128) and under cocotb (iCE40UP5K SPRAM, with the toolchain's model of it)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from zipml.hw.resident import SPRAM_WORDS, ResidentMemory
from zipml.sim.runner import build_and_test, build_dir_for, primitive_model

DEPTH = 64


async def write_words(ctx, dut, words, order):
    """Write ``words[addr]`` at each address of ``order``, one per cycle."""
    for addr in order:
        ctx.set(dut.w_addr, int(addr))
        ctx.set(dut.w_data, words[addr])
        ctx.set(dut.w_en, 1)
        await ctx.tick()
    ctx.set(dut.w_en, 0)


async def start_read_out(ctx, dut, length):
    ctx.set(dut.length, length)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)


@pytest.mark.parametrize("output_register", [False, True])
@pytest.mark.parametrize("width", [32, 128])
def test_read_out_follows_writes(width, output_register):
    dut = ResidentMemory(width, DEPTH, output_register=output_register)
    rng = np.random.default_rng(width)
    words = [int.from_bytes(rng.bytes(width // 8), "little") for _ in range(DEPTH)]
    # (length, cycles of read-out before the next start; None: until the last word)
    runs = [(DEPTH, None), (5, None), (DEPTH, 9), (0, None), (1, None), (DEPTH - 1, None)]
    seen = []

    async def bench(ctx):
        await write_words(ctx, dut, words, rng.permutation(DEPTH))
        for length, cut in runs:
            await start_read_out(ctx, dut, length)
            out, cycles = [], 0
            while (len(out) < length) if cut is None else (cycles < cut):
                ready = bool(rng.integers(0, 3))
                ctx.set(dut.o_stream.ready, ready)
                if ready and ctx.get(dut.o_stream.valid):
                    out.append(ctx.get(dut.o_stream.payload))
                await ctx.tick()
                cycles += 1
                assert cycles < 8 * DEPTH, "read-out stalled"
            ctx.set(dut.o_stream.ready, 0)
            # nothing beyond the last word
            for _ in range(3):
                await ctx.tick()
            if cut is None:
                assert not ctx.get(dut.o_stream.valid)
            seen.append(out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for (length, cut), out in zip(runs, seen):
        expected = words[:length] if cut is None else words[:len(out)]
        assert out == expected
    assert len(seen[2]) > 0


def test_spram_read_out(request):
    """Two rows of SPRAM blocks (iCE40UP5K: 4 x 16,384 x 16 bits), read across the rows, under
    cocotb with the toolchain's model of the block."""
    build_dir = build_dir_for(request)
    depth = 2 * SPRAM_WORDS
    build_and_test(ResidentMemory(32, depth, spram=True), "resident_tb", build_dir,
                   sources=[primitive_model("ice40", "SB_SPRAM256KA", build_dir)],
                   env={"WIDTH": 32, "WORDS": SPRAM_WORDS + 300,
                        "BOUNDARY": SPRAM_WORDS})


@pytest.mark.parametrize("output_register", [False, True])
def test_read_out_one_word_per_cycle(output_register):
    """With the consumer ready the first word is valid in the second cycle after ``start`` (the
    third with the output register) and the rest follow back to back; a stall of the consumer
    costs no cycle beyond its own."""
    dut = ResidentMemory(64, DEPTH, output_register=output_register)
    first = 2 if output_register else 1
    length = 20
    stalls = {5: 3, 11: 1}                  # at output word k, the consumer waits this many cycles
    words = [addr * 0x0101 for addr in range(DEPTH)]
    timeline = []

    async def bench(ctx):
        await write_words(ctx, dut, words, range(DEPTH))
        await start_read_out(ctx, dut, length)
        cycle, waited = 0, {}
        while len(timeline) < length:
            k = len(timeline)
            ready = waited.get(k, 0) >= stalls.get(k, 0)
            if not ready:
                waited[k] = waited.get(k, 0) + 1
            ctx.set(dut.o_stream.ready, ready)
            if ready and ctx.get(dut.o_stream.valid):
                timeline.append((cycle, ctx.get(dut.o_stream.payload)))
            await ctx.tick()
            cycle += 1
            assert cycle < 4 * length

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [word for _, word in timeline] == words[:length]
    # cycles counted from the one after start's
    expected, t = [], first
    for k in range(length):
        t += stalls.get(k, 0)
        expected.append(t)
        t += 1
    assert [c for c, _ in timeline] == expected
