"""Loadable down-counters, in logic or in an iCE40 SB_MAC16's accumulator.

A 32-bit counter in iCE40 logic is 32 logic cells (LUT, carry and flip-flop each); the UP5K's
hard multipliers hold a 32-bit accumulator each, and those the trainer leaves free count
instead. The simulation model is the toolchain's (``zipml.sim.runner.primitive_model``).
"""

from amaranth import ClockSignal, Instance, ResetSignal, Signal

__all__ = ["down_counter"]


def down_counter(m, name, *, load, value, dec, hard=False):
    """A 32-bit counter: ``value`` when ``load``, else one less when ``dec`` (wrapping). With
    ``hard``, an SB_MAC16 adding 0xFFFF_FFFF to its accumulator (the two 16-bit adders
    chained by their carry) and loading C:D; reset to 0. Returns the count."""
    count = Signal(32, name=name)
    if not hard:
        with m.If(load):
            m.d.sync += count.eq(value)
        with m.Elif(dec):
            m.d.sync += count.eq(count - 1)
        return count
    hold = ~(load | dec)
    m.submodules[name] = Instance(
        "SB_MAC16",
        # both halves: the accumulator register out, its own value plus the A (top) or B
        # (bottom) input, the top half taking the bottom half's carry
        p_TOPOUTPUT_SELECT=1, p_BOTOUTPUT_SELECT=1,
        p_TOPADDSUB_UPPERINPUT=0, p_BOTADDSUB_UPPERINPUT=0,
        p_TOPADDSUB_LOWERINPUT=0, p_BOTADDSUB_LOWERINPUT=0,
        p_TOPADDSUB_CARRYSELECT=3, p_BOTADDSUB_CARRYSELECT=0,
        i_CLK=ClockSignal(), i_CE=1,
        i_A=0xFFFF, i_B=0xFFFF, i_C=value[16:32], i_D=value[:16],
        i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0,
        i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=ResetSignal(), i_ORSTBOT=ResetSignal(),
        i_OLOADTOP=load, i_OLOADBOT=load, i_ADDSUBTOP=0, i_ADDSUBBOT=0,
        i_OHOLDTOP=hold, i_OHOLDBOT=hold, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0,
        o_O=count)
    return count
