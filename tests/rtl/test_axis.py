"""AXI-Stream <-> byte adapters under cocotb with cocotbext-axi: a loopback through a byte FIFO
and the frame echo core of the PCIe top (``axis_tb``).

Run with ``WAVES=1`` to keep waveforms in ``build/<test id>``.
"""

import pytest
from amaranth import Module
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from zipml.hw.axis import AXISByteBridge
from zipml.hw.pcie import FrameEcho
from zipml.sim.runner import build_and_test, build_dir_for, simulator_available

NO_ICARUS = pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")
SIMS = ["verilator", pytest.param("icarus", marks=NO_ICARUS)]


class ByteFIFO(wiring.Component):
    """A small byte FIFO as a byte-stream core.

    Members
    -------
    i_stream : In(stream.Signature(8))
    o_stream : Out(stream.Signature(8))
    """

    def __init__(self, depth=8):
        self.depth = depth
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=self.depth)
        m.d.comb += [
            buf.w_data.eq(self.i_stream.payload), buf.w_en.eq(self.i_stream.valid),
            self.i_stream.ready.eq(buf.w_rdy),
            self.o_stream.payload.eq(buf.r_data), self.o_stream.valid.eq(buf.r_rdy),
            buf.r_en.eq(self.o_stream.ready),
        ]
        return m


@pytest.mark.parametrize("sim, data_width, flush_timeout", [
    ("verilator", 64, None),
    ("verilator", 64, 40),
    ("verilator", 32, None),
    ("verilator", 8, None),
    pytest.param("icarus", 64, None, marks=NO_ICARUS),
])
def test_axis_loopback(request, sim, data_width, flush_timeout):
    top = AXISByteBridge(ByteFIFO(), data_width, flush_timeout=flush_timeout)
    build_and_test(top, "axis_tb", build_dir_for(request), sim=sim, testcase="test_loopback",
                   env={"DATA_WIDTH": data_width, "FLUSH_TIMEOUT": flush_timeout or ""})


@pytest.mark.parametrize("sim", SIMS)
def test_axis_frame_echo(request, sim):
    # The receiver's buffer holds three requests of up to 64 payload bytes: the bench keeps
    # no more than that in flight.
    top = AXISByteBridge(FrameEcho(max_payload=256, timeout=2000), 64)
    build_and_test(top, "axis_tb", build_dir_for(request), sim=sim, testcase="test_frame_echo",
                   env={"DATA_WIDTH": 64, "MAX_PAYLOAD": 64})
