"""The loadable down-counter in an SB_MAC16 (``zipml.hw.dsp``) against the one in logic, under
cocotb with the toolchain's model of the block (``dsp_tb``)."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from zipml.hw.dsp import down_counter
from zipml.sim.runner import build_and_test, build_dir_for, primitive_model


class CounterPair(wiring.Component):
    """The same counter twice: in logic (``soft``) and in an SB_MAC16 (``hard``)."""

    def __init__(self):
        super().__init__({"load": In(1), "dec": In(1), "value": In(32),
                          "soft": Out(32), "hard": Out(32)})

    def elaborate(self, platform):
        m = Module()
        for name in ("soft", "hard"):
            count = down_counter(m, f"{name}_count", load=self.load, value=self.value,
                                 dec=self.dec, hard=name == "hard")
            m.d.comb += getattr(self, name).eq(count)
        return m


def test_hard_counter_follows_soft(request):
    build_dir = build_dir_for(request)
    build_and_test(CounterPair(), "dsp_tb", build_dir,
                   sources=[primitive_model("ice40", "SB_MAC16", build_dir)])
