"""The gradient-scalar stage: dot-product sum and label in, update scalar c out (NUMERICS.md
section 4, steps 1 to 4), five or six registered stages.
"""

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..contract import (
    LABEL_BITS,
    LR_BITS,
    LR_FRAC,
    MODEL_BITS,
    MODEL_FRAC,
    SCALAR_BITS,
    SCALAR_FRAC,
    SIGMOID_ENTRIES,
    SIGMOID_STEP_LOG2,
    Loss,
    sat_limits,
    sigmoid_table,
)
from ..sim.timing import SCALAR_STAGES, SERIAL_SCALAR_STAGES

__all__ = ["GradientScalar", "saturate", "sigmoid_index", "decayed_lr", "decay_epoch",
           "count_decay_step"]


def saturate(m, value, bits, name):
    """Comb: ``value`` clamped to ``bits`` signed bits; returns (clamped signal, saturated flag)."""
    lo, hi = sat_limits(bits)
    out = Signal(signed(bits), name=name)
    flag = Signal(name=f"{name}_sat")
    if value.shape().signed and len(value) > bits:
        # a signed value fits exactly when the bits from the result's sign bit up are all equal
        # (one bit too wide, as a sum or difference of two in-range words: the top two): no
        # comparator needed
        top = value[bits - 1:]
        m.d.comb += [flag.eq(~(top.all() | ~top.any())),
                     out.eq(Mux(flag, Mux(value[-1], lo, hi), value[:bits]))]
        return out, flag
    with m.If(value > hi):
        m.d.comb += [out.eq(hi), flag.eq(1)]
    with m.Elif(value < lo):
        m.d.comb += [out.eq(lo), flag.eq(1)]
    with m.Else():
        m.d.comb += out.eq(value)
    return out, flag


def decayed_lr(lr, shift):
    """``lr >> shift``, 0 once every bit is shifted out: the rate of a decayed epoch."""
    return Mux(shift >= LR_BITS, 0, lr >> shift)


def decay_epoch(m, decay_epochs, left, step):
    """One finished epoch of the learning-rate decay: every ``decay_epochs`` epochs (0: never)
    the ``step`` assignments halve the rate. ``left`` counts the epochs to the next step down
    to 1 (``decay_epochs`` at the start): a constant test, not a compare."""
    with m.If(decay_epochs != 0):
        with m.If(left == 1):
            m.d.sync += [left.eq(decay_epochs), *step]
        with m.Else():
            m.d.sync += left.eq(left - 1)


def count_decay_step(shift):
    """:func:`decay_epoch`'s step as a shift count (up to 63) for :func:`decayed_lr`."""
    return [shift.eq(Mux(shift == 63, 63, shift + 1))]


def sigmoid_index(m, d, s, shift, entries):
    """Comb: ``clamp(floor(-sign * d / 2**shift) + entries // 2, 0, entries - 1)``, sign +1 if
    ``s`` else -1 (the logistic loss's table index, NUMERICS.md).

    Without a carry chain as wide as ``d``: -d = ~(d - 1), and d - 1 borrows from the bits above
    ``shift`` only when the bits below are 0, from the top bits only when the index bits are 0
    too; so the range test looks at bits, and the one subtraction is the index's own."""
    half = entries // 2
    k = half.bit_length() - 1           # half = 2**k
    assert entries == 2 << k
    d = Cat(d, d[-1])                   # a sign bit more: d - 1 fits
    hi = d[shift:]                      # floor(d / 2**shift), its bits
    top = hi[k:]                        # e = hi - borrow is in range when its top bits are equal
    borrow = s & ~d[:shift].any()       # -sign * d = ~(d - 1) when s: d - 1 borrows from hi
    low = Signal(k + 1, name="sigmoid_low")
    m.d.comb += low.eq(hi[:k] - borrow)         # e's low k bits, and a borrow from top
    # e's top bits: top's, or top - 1 if the borrow reaches them (equal only if top was 0 or 1)
    in_range = Mux(low[k], ~top[1:].any(), top.all() | ~top.any())
    e_k = top[0] ^ low[k]
    t_low = Mux(s, ~Cat(low[:k], e_k), Cat(low[:k], e_k))   # t = -sign * d >> shift: ~e if s
    idx = Signal(range(entries), name="sigmoid_idx")
    with m.If(in_range):
        m.d.comb += idx.eq(Cat(t_low[:k], ~t_low[k]))   # t + half
    with m.Elif(s ^ d[-1]):             # t < -half (out of range, hi - borrow has d's sign)
        m.d.comb += idx.eq(0)
    with m.Else():
        m.d.comb += idx.eq(entries - 1)
    return idx


class GradientScalar(wiring.Component):
    """``c = sat32(round(g(D, y) * lr / 2**18))`` from the exact dot-product sum of one row.

    The sum arrives in two parts: ``i_sum`` (signed, ``frac`` fractional bits) and, for RAW rows,
    ``i_lo``: the sum of the product bits below ``frac`` (``lo_shift`` bits per term, unsigned),
    so the exact sum is ``i_sum * 2**lo_shift + i_lo`` with ``frac + lo_shift`` fractional bits.

    Parameters
    ----------
    sum_width : int
        Bits of ``i_sum``.
    lo_width : int
        Bits of ``i_lo``.
    frac : int
        Fractional bits of ``i_sum``.
    lo_shift : int
    multiplier : bool
        Multiply g by the rate here (four partial products in C3, their sum and the rounding
        constant registered in C4, the shift and clamp in C5: six stages); without, the
        product comes from the user's multiplier: ``o_g`` and ``lr`` registered together as
        its operands at the end of C1, their product registered at the end of C2 and given
        back on ``i_p`` (five stages).
    signed_table : bool
        The sigmoid ROM holds g itself, ``-s * sigmoid``, for both label signs (twice the
        entries, a sign bit more): C2 takes it as it is read, with no negation after the
        block RAM.
    registered_inputs : bool
        The user's registers are C0: ``i_valid`` comes in C0 (a cycle later), with ``i_sum``,
        ``i_lo``, ``i_label`` and ``i_label_pos`` held in registers for that cycle, and the
        scalar keeps no copy of them.

    Members
    -------
    i_valid : In(1)
    i_sum : In(signed(sum_width))
    i_lo : In(lo_width)
    i_label : In(signed(LABEL_BITS))
    i_label_pos : In(1)
        With ``registered_inputs``: ``i_label > 0``, from the user's register.
    raw : In(1)
        Add ``floor(i_lo / 2**lo_shift)`` to the sum (RAW rows).
    loss : In(2)
        A :class:`~zipml.contract.Loss`.
    lr : In(LR_BITS)
        The learning rate of the current epoch (with ``multiplier``).
    o_valid : Out(1)
        High :attr:`latency` cycles after ``i_valid`` (one fewer with ``registered_inputs``).
    o_valid_next : Out(1)
        High a cycle before ``o_valid`` (for consumers that register what ``o_valid`` starts).
    o_c : Out(signed(SCALAR_BITS))
        Held until the next row's.
    o_sat : Out(1)
        g or c saturated (held as ``o_c``).
    o_g : Out(signed(MODEL_BITS))
        Without ``multiplier``: g, valid with ``o_g_valid`` (C1).
    o_g_valid : Out(1)
    i_p : In(signed(MODEL_BITS + LR_BITS))
        Without ``multiplier``: g times the rate, in C3.
    """

    def __init__(self, *, sum_width, lo_width, frac, lo_shift, multiplier=True,
                 signed_table=False, registered_inputs=False):
        self.sum_width, self.lo_width = sum_width, lo_width
        self.frac, self.lo_shift = frac, lo_shift
        self.multiplier, self.registered_inputs = multiplier, registered_inputs
        self.signed_table = signed_table
        #: Stages C0 .. C5 with ``multiplier`` (:data:`zipml.sim.timing.SCALAR_STAGES`),
        #: C0 .. C4 without (:data:`zipml.sim.timing.SERIAL_SCALAR_STAGES`).
        self.latency = SCALAR_STAGES if multiplier else SERIAL_SCALAR_STAGES
        external = {} if multiplier else {
            "o_g": Out(signed(MODEL_BITS)), "o_g_valid": Out(1),
            "i_p": In(signed(MODEL_BITS + LR_BITS))}
        if registered_inputs:
            external["i_label_pos"] = In(1)
        super().__init__({
            **external,
            "i_valid": In(1), "i_sum": In(signed(sum_width)), "i_lo": In(lo_width),
            "i_label": In(signed(LABEL_BITS)), "raw": In(1), "loss": In(2),
            "lr": In(LR_BITS),
            "o_valid": Out(1), "o_valid_next": Out(1), "o_c": Out(signed(SCALAR_BITS)),
            "o_sat": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        one = 1 << MODEL_FRAC
        sig_shift = MODEL_FRAC - SIGMOID_STEP_LOG2
        c_shift = MODEL_FRAC + LR_FRAC - SCALAR_FRAC

        table = sigmoid_table()
        if self.signed_table:
            # entry Cat(index, s): g = -s * sigmoid, s = +1 when the label's sign bit s is set
            rom = memory.Memory(shape=signed(MODEL_FRAC + 2), depth=2 * SIGMOID_ENTRIES,
                                init=table + tuple(-v for v in table))
        else:
            rom = memory.Memory(shape=unsigned(MODEL_FRAC + 1), depth=SIGMOID_ENTRIES,
                                init=table)
        m.submodules.sigmoid = rom
        rom_rd = rom.read_port()

        # C0: D = floor(S / 2**f), the RAW remainder folded in.
        v0 = Signal()
        d0 = Signal(signed(self.sum_width - self.frac + 1))
        y0 = Signal(signed(LABEL_BITS))
        s = Signal()                        # the label's sign s = +1 (else -1)
        lo_carry = Mux(self.raw, self.i_lo >> self.lo_shift, 0)
        c0 = m.d.comb if self.registered_inputs else m.d.sync
        c0 += [v0.eq(self.i_valid), y0.eq(self.i_label),
               s.eq(self.i_label_pos if self.registered_inputs else self.i_label > 0),
               d0.eq((self.i_sum + lo_carry) >> self.frac)]

        # C1: the loss functions' operands; the sigmoid ROM is read at
        # clamp(floor(-s D / 2**sig_shift) + half) (sigmoid_index: no carry chain as wide as D)
        v1, s1, hinge1 = Signal(), Signal(), Signal()
        e1 = Signal(signed(max(len(d0), LABEL_BITS) + 1))   # D - y: squared loss, C2 saturates
        rom_index = sigmoid_index(m, d0, s, sig_shift, SIGMOID_ENTRIES)
        m.d.comb += rom_rd.addr.eq(Cat(rom_index, s) if self.signed_table else rom_index)
        # the hinge's margin s D < 1 as two compares of D with constants (no negation)
        m.d.sync += [v1.eq(v0), s1.eq(s), hinge1.eq(Mux(s, d0 < one, d0 > -one)),
                     e1.eq(d0 - y0)]

        # C2: g by loss.
        v2, sat2 = Signal(), Signal()
        g = Signal(signed(MODEL_BITS))
        g_sq, sq_sat = saturate(m, e1, MODEL_BITS, "g_sq")
        with m.Switch(self.loss):
            with m.Case(Loss.LOGISTIC):
                m.d.comb += g.eq(rom_rd.data if self.signed_table else
                                 Mux(s1, -rom_rd.data, rom_rd.data))
            with m.Case(Loss.HINGE):
                m.d.comb += g.eq(Mux(hinge1, Mux(s1, -one, one), 0))
            with m.Default():
                m.d.comb += g.eq(g_sq)
        m.d.sync += [v2.eq(v1), sat2.eq(sq_sat & (self.loss == Loss.SQUARED))]
        v3, sat3 = Signal(), Signal()
        m.d.sync += [v3.eq(v2), sat3.eq(sat2)]
        p = Signal(signed(MODEL_BITS + LR_BITS + 1))
        base = 0                            # p's bits below 2**base are dropped (floor)
        if not self.multiplier:
            # C2 and C3 are the user's multiplier's operand and product registers
            m.d.comb += [self.o_g.eq(g), self.o_g_valid.eq(v1), p.eq(self.i_p)]
        else:
            g2 = Signal(signed(MODEL_BITS))
            m.d.sync += g2.eq(g)
            # C3: g * lr in four partial products, one hard multiplier each, registered at
            # its output (halves of g, halves of lr): the sum waits for C4.
            g_half, lr_half = MODEL_BITS // 2, LR_BITS // 2
            g_parts = [(g2[:g_half], 0), (g2[g_half:].as_signed(), g_half)]
            lr_parts = [(self.lr[:lr_half], 0), (self.lr[lr_half:], lr_half)]
            parts = []
            for i, (g_part, g_at) in enumerate(g_parts):
                for j, (lr_part, lr_at) in enumerate(lr_parts):
                    part = Signal(signed(g_half + lr_half + 2), name=f"p3_{i}{j}")
                    m.d.sync += part.eq(g_part * lr_part)
                    parts.append((part, g_at + lr_at))
            # below the second part's offset only the first part has bits, and they reach
            # neither the rounding nor a carry: the sum starts there (shorter carry chains)
            base = min(at for _, at in parts if at)
            assert base < c_shift
            m.d.comb += p.eq(sum(part << (at - base) if at else part >> base
                                 for part, at in parts))

        # C4 (with ``multiplier``: the sum of the partial products and the rounding constant,
        # registered; C5 shifts and clamps): c = sat32(round(g * lr / 2**18)),
        # p = floor(g * lr / 2**base).
        rounded = p + (1 << (c_shift - base - 1))
        v_last, sat_last = v3, sat3
        if self.multiplier:
            v4, sat4 = Signal(), Signal()
            p4 = Signal(rounded.shape(), name="p4")
            m.d.sync += [v4.eq(v3), sat4.eq(sat3), p4.eq(rounded)]
            v_last, sat_last, rounded = v4, sat4, p4
        c, c_sat = saturate(m, rounded >> (c_shift - base), SCALAR_BITS, "c")
        m.d.comb += self.o_valid_next.eq(v_last)
        m.d.sync += self.o_valid.eq(v_last)
        with m.If(v_last):
            m.d.sync += [self.o_c.eq(c), self.o_sat.eq(sat_last | c_sat)]
        return m
