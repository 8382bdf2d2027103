"""The gradient-scalar stage alone (Amaranth's simulator): c for random and extreme sums, labels
and learning rates, every loss, against the golden model's arithmetic."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from zipml import contract
from zipml.contract import Loss
from zipml.hw.scalar import GradientScalar, sigmoid_index
from zipml.sim import golden, timing

SUM_WIDTH, LO_WIDTH, FRAC, LO_SHIFT = 54, 30, 8, 22


def expected(loss, s, lo, raw, y, lr):
    d = (s + ((lo >> LO_SHIFT) if raw else 0)) >> FRAC
    g, g_sat = golden._gradient_scalar(loss, np.array([d]), np.array([y]))
    c_raw = contract.round_shift(int(g[0]) * lr, 18)
    c = contract.sat(c_raw, contract.SCALAR_BITS)
    return c, bool(g_sat[0]) or c != c_raw


def with_product_registers(dut):
    """The user's multiplier of a scalar without its own: operands registered from ``o_g`` and
    ``lr``, their product registered and given back on ``i_p``."""
    m = Module()
    m.submodules.dut = dut
    g, lr = Signal.like(dut.o_g), Signal.like(dut.lr)
    product = Signal.like(dut.i_p)
    m.d.sync += [g.eq(dut.o_g), lr.eq(dut.lr), product.eq(g * lr)]
    m.d.comb += dut.i_p.eq(product)
    return m


@pytest.mark.parametrize(("multiplier", "signed_table", "registered_inputs"), [
    (True, False, False), (True, False, True),
    (True, True, False),                    # the W-lane pipeline's
    (False, False, True),                   # the lane-serial pipeline's (its multiplier here)
])
@pytest.mark.parametrize("loss", list(Loss))
def test_scalar_matches_golden(loss, multiplier, signed_table, registered_inputs):
    """Every input vector's c at the documented latency (six stages with the scalar's own
    multipliers, five with the user's; one less when the inputs are the user's registers,
    which this bench holds), held until the next row's."""
    dut = GradientScalar(sum_width=SUM_WIDTH, lo_width=LO_WIDTH, frac=FRAC, lo_shift=LO_SHIFT,
                         multiplier=multiplier, signed_table=signed_table,
                         registered_inputs=registered_inputs)
    latency = dut.latency - registered_inputs
    assert dut.latency == (timing.SCALAR_STAGES if multiplier else timing.SERIAL_SCALAR_STAGES)
    rng = np.random.default_rng(int(loss))
    smax = 1 << (SUM_WIDTH - 1)
    vectors = []
    for i in range(300):
        scale = [1 << 34, 1 << 40, smax][i % 3]
        s = int(rng.integers(-scale, scale)) if scale < smax else int(rng.integers(-smax, smax))
        vectors.append((s, int(rng.integers(0, 1 << LO_WIDTH)), bool(i % 2),
                        int(rng.choice([0, 1, -1, 1 << 24, -(1 << 31), (1 << 31) - 1,
                                        int(rng.integers(-(1 << 31), 1 << 31))])),
                        int(rng.choice([1, 1 << 18, (1 << 24) - 1]))))
    # D around the ends of the sigmoid table: floor(-s D / 2**k) from -130 to 129
    k = contract.MODEL_FRAC - contract.SIGMOID_STEP_LOG2
    half = contract.SIGMOID_ENTRIES // 2
    for t in (-half - 2, -half - 1, -half, -half + 1, -1, 0, 1, half - 2, half - 1, half,
              half + 1):
        for r in (0, (1 << k) - 1):
            for y in (1, -1):
                d = t * (1 << k) + r
                d = -d if y > 0 else d
                vectors.append((d << FRAC, 0, False, y, 1 << 18))

    results = []

    async def bench(ctx):
        ctx.set(dut.loss, int(loss))
        for s, lo, raw, y, lr in vectors:
            ctx.set(dut.i_valid, 1)
            ctx.set(dut.i_sum, s)
            ctx.set(dut.i_lo, lo)
            ctx.set(dut.raw, raw)
            ctx.set(dut.i_label, y)
            if registered_inputs:
                ctx.set(dut.i_label_pos, y > 0)
            ctx.set(dut.lr, lr)
            await ctx.tick()
            ctx.set(dut.i_valid, 0)
            ctx.set(dut.i_sum, ~s)          # the inputs matter in C0 only
            ctx.set(dut.i_label, ~y)
            if registered_inputs:
                ctx.set(dut.i_label_pos, not y > 0)
            await ctx.tick().repeat(latency - 2)
            assert ctx.get(dut.o_valid_next) and not ctx.get(dut.o_valid)
            await ctx.tick()
            assert ctx.get(dut.o_valid) and not ctx.get(dut.o_valid_next)
            results.append((ctx.get(dut.o_c), bool(ctx.get(dut.o_sat))))
            await ctx.tick()
            assert not ctx.get(dut.o_valid)
            assert (ctx.get(dut.o_c), bool(ctx.get(dut.o_sat))) == results[-1]

    sim = Simulator(dut if multiplier else with_product_registers(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for v, got in zip(vectors, results):
        assert got == expected(loss, *v), v


@pytest.mark.parametrize("width", [28, 29, 47])
def test_sigmoid_index_every_boundary(width):
    """The sigmoid table's index without a wide carry chain against the golden model's
    ``clip((-sign * d >> shift) + entries / 2)``: every d around each step of the index and
    each end of the range, 0 and the extremes, both signs, and random d."""
    shift = contract.MODEL_FRAC - contract.SIGMOID_STEP_LOG2
    entries, half = contract.SIGMOID_ENTRIES, contract.SIGMOID_ENTRIES // 2
    m = Module()
    d, s = Signal(signed(width)), Signal()
    idx = sigmoid_index(m, d, s, shift, entries)
    lo, hi = contract.sat_limits(width)
    steps = [j << shift for j in range(-half - 2, half + 3)]
    values = {v + e for v in steps + [0, lo, hi] for e in (-1, 0, 1)}
    values |= set(np.random.default_rng(width).integers(lo, hi, 2000, endpoint=True).tolist())
    values = sorted(v for v in values if lo <= v <= hi)

    async def bench(ctx):
        for value in values:
            for sign in (1, -1):
                ctx.set(d, value)
                ctx.set(s, sign > 0)
                want = min(max((-sign * value >> shift) + half, 0), entries - 1)
                assert ctx.get(idx) == want, (value, sign)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
