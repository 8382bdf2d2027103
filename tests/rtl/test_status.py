"""The status bank alone, in Amaranth's simulator: its snapshots against counts kept in Python,
under random events (bursts of one per cycle included), clears at any time and snapshots asked
for back to back, and the build-time bytes behind the snapshot."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from zipml.hw.status import COUNTERS, StatusBank
from zipml.protocol import (
    DeviceState,
    Status,
    StatusReply,
    pack_struct,
    struct_bytes,
    unpack_struct,
)

CONSTANTS = bytes(range(0x40, 0x40 + 35))
REPLY_BYTES = struct_bytes(StatusReply)
FIELDS = {"state": DeviceState.BUSY, "last_error": Status.BAD_CRC, "last_error_cmd": 0x42,
          "flags": 1, "stored_words": 0x1234_5678, "epochs_left": 0x89AB_CDEF}


def run(bench):
    dut = StatusBank(constants=CONSTANTS)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    sim.run()


async def read(ctx, dut, first, count):
    out = []
    for addr in range(first, first + count):
        ctx.set(dut.rd_addr, addr)
        ctx.set(dut.rd_en, 1)
        await ctx.tick()
        out.append(ctx.get(dut.rd_data))
    ctx.set(dut.rd_en, 0)
    return bytes(out)


def set_events(ctx, dut, rng, rate):
    """Each counter's event this cycle with probability ``rate``; returns them."""
    inc = [bool(rng.random() < rate) for _ in COUNTERS]
    ctx.set(dut.inc, sum(b << i for i, b in enumerate(inc)))
    return inc


def set_fields(ctx, dut, fields):
    for name, value in fields.items():
        ctx.set(getattr(dut.fields, name), value.value if hasattr(value, "value") else value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_snapshots_follow_the_counts(seed):
    rng = np.random.default_rng(seed)
    checked = {"exact": 0, "bounded": 0}

    async def bench(ctx, dut):
        counts = dict.fromkeys(COUNTERS, 0)
        fields = dict(FIELDS)
        set_fields(ctx, dut, fields)
        assert await read(ctx, dut, REPLY_BYTES, len(CONSTANTS)) == CONSTANTS
        for _ in range(60):
            # a stretch of events (none, sparse, or every counter every cycle), maybe a clear
            rate = rng.choice([0.0, 0.2, 1.0])
            for _ in range(int(rng.integers(0, 200))):
                inc = set_events(ctx, dut, rng, rate)
                clear = rng.random() < 0.01
                ctx.set(dut.clear, clear)
                await ctx.tick()
                for name, b in zip(COUNTERS, inc):
                    counts[name] = 0 if clear else counts[name] + b
            ctx.set(dut.clear, 0)
            # a snapshot, with events going on while it is taken or not
            busy_rate = rng.choice([0.0, rate])
            fields = {name: int(rng.integers(0, 1 << width))
                      for name, width in (("last_error_cmd", 8), ("flags", 8),
                                          ("stored_words", 32), ("epochs_left", 32))}
            fields.update(state=rng.choice(list(DeviceState)), last_error=rng.choice(list(Status)))
            set_fields(ctx, dut, fields)
            ctx.set(dut.snap, 1)
            before = dict(counts)
            cycles = 0
            while True:
                inc = set_events(ctx, dut, rng, busy_rate)
                await ctx.tick()
                ctx.set(dut.snap, 0)
                for name, b in zip(COUNTERS, inc):
                    counts[name] += b
                cycles += 1
                if not ctx.get(dut.busy):
                    break
            assert cycles <= 2 * REPLY_BYTES + 2
            ctx.set(dut.inc, 0)
            got = unpack_struct(StatusReply, await read(ctx, dut, 0, REPLY_BYTES))
            for name, value in fields.items():
                assert got[name] == value, name
            for name in COUNTERS:
                assert before[name] <= got[name] <= counts[name], (name, before, got, counts)
            if before == counts:
                assert {name: got[name] for name in COUNTERS} == counts
                checked["exact"] += 1
            else:
                checked["bounded"] += 1
            # the snapshot stays until the next one
            raw = pack_struct(StatusReply, **got)
            assert await read(ctx, dut, 0, REPLY_BYTES) == raw

    run(bench)
    assert checked["exact"] > 10 and checked["bounded"] > 5


def test_carries_through_the_bytes():
    """70,000 events a counter: the bank carries into the third byte of every counter, and a
    clear in the middle of a round leaves no stale byte behind."""

    async def snapshot(ctx, dut):
        ctx.set(dut.snap, 1)
        await ctx.tick()
        ctx.set(dut.snap, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        return unpack_struct(StatusReply, await read(ctx, dut, 0, REPLY_BYTES))

    async def bench(ctx, dut):
        set_fields(ctx, dut, FIELDS)
        ctx.set(dut.inc, (1 << len(COUNTERS)) - 1)
        await ctx.tick().repeat(70_000)
        ctx.set(dut.inc, 0)
        got = await snapshot(ctx, dut)
        assert [got[name] for name in COUNTERS] == [70_000] * len(COUNTERS)
        for stop in (3, 17, 29):            # clears at different points of the round
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.inc, 0b0101)
            await ctx.tick().repeat(stop)
            ctx.set(dut.inc, 0)
            got = await snapshot(ctx, dut)
            assert [got[name] for name in COUNTERS] == [stop, 0, stop, 0]

    run(bench)
