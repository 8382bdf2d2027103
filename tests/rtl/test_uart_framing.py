"""UART and framing gateware under cocotb: an echo device at the real baud, and the framing
components alone at stream level with idle cycles and back-pressure.

Run with ``WAVES=1`` to keep waveforms in ``build/<test id>``.
"""

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from zipml.hw.framing import FrameReceiver, FrameTransmitter
from zipml.hw.uart import UARTReceiver, UARTTransmitter
from zipml.protocol import Header
from zipml.sim.runner import build_and_test, build_dir_for, simulator_available

BAUD = 3_000_000


class EchoTop(wiring.Component):
    """UART rx -> FrameReceiver -> FrameTransmitter -> UART tx: answers every frame the
    receiver reports with its verdict, echoing the payload of good frames.

    Members
    -------
    rx : In(1)
    tx : Out(1)
    frames_ok, frames_rejected, frames_dropped : Out(16)
    framing_errors : Out(16)
        UART stop-bit errors.
    """

    def __init__(self, *, clk_freq, baud=BAUD, max_payload=256, timeout):
        self.clk_freq, self.baud = clk_freq, baud
        self.max_payload, self.timeout = max_payload, timeout
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "frames_ok": Out(16), "frames_rejected": Out(16), "frames_dropped": Out(16),
            "framing_errors": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTReceiver(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.utx = utx = UARTTransmitter(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.frx = frx = FrameReceiver(max_payload=self.max_payload, timeout=self.timeout)
        m.submodules.ftx = ftx = FrameTransmitter()
        wiring.connect(m, urx.o_stream, frx.i_stream)
        wiring.connect(m, frx.o_header, ftx.i_header)
        wiring.connect(m, frx.o_payload, ftx.i_payload)
        wiring.connect(m, ftx.o_stream, utx.i_stream)
        m.d.comb += [
            urx.rx.eq(self.rx), self.tx.eq(utx.tx),
            self.frames_ok.eq(frx.frames_ok), self.frames_rejected.eq(frx.frames_rejected),
            self.frames_dropped.eq(frx.frames_dropped),
        ]
        with m.If(urx.framing_error):
            m.d.sync += self.framing_errors.eq(self.framing_errors + 1)
        return m


class FramingTop(wiring.Component):
    """A FrameReceiver and a FrameTransmitter side by side, every stream on a port.

    Members
    -------
    rx_bytes : In(stream.Signature(8))
    rx_header : Out(stream.Signature(Header))
    rx_payload : Out(stream.Signature(8))
    tx_header : In(stream.Signature(Header))
    tx_payload : In(stream.Signature(8))
    tx_bytes : Out(stream.Signature(8))
    frames_ok, frames_rejected, frames_dropped : Out(16)
    """

    def __init__(self, *, max_payload, timeout):
        self.max_payload, self.timeout = max_payload, timeout
        super().__init__({
            "rx_bytes": In(stream.Signature(8)),
            "rx_header": Out(stream.Signature(Header)),
            "rx_payload": Out(stream.Signature(8)),
            "tx_header": In(stream.Signature(Header)),
            "tx_payload": In(stream.Signature(8)),
            "tx_bytes": Out(stream.Signature(8)),
            "frames_ok": Out(16), "frames_rejected": Out(16), "frames_dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.frx = frx = FrameReceiver(max_payload=self.max_payload, timeout=self.timeout)
        m.submodules.ftx = ftx = FrameTransmitter()
        wiring.connect(m, wiring.flipped(self.rx_bytes), frx.i_stream)
        wiring.connect(m, frx.o_header, wiring.flipped(self.rx_header))
        wiring.connect(m, frx.o_payload, wiring.flipped(self.rx_payload))
        wiring.connect(m, wiring.flipped(self.tx_header), ftx.i_header)
        wiring.connect(m, wiring.flipped(self.tx_payload), ftx.i_payload)
        wiring.connect(m, ftx.o_stream, wiring.flipped(self.tx_bytes))
        m.d.comb += [
            self.frames_ok.eq(frx.frames_ok), self.frames_rejected.eq(frx.frames_rejected),
            self.frames_dropped.eq(frx.frames_dropped),
        ]
        return m


NO_ICARUS = pytest.mark.skipif(not simulator_available("icarus"), reason="iverilog not installed")
SIMS = ["verilator", pytest.param("icarus", marks=NO_ICARUS)]


@pytest.mark.parametrize("sim, clk_freq", [
    ("verilator", 12_000_000), ("verilator", 48_000_000),
    pytest.param("icarus", 12_000_000, marks=NO_ICARUS),
])
def test_uart_echo(request, sim, clk_freq):
    bit = clk_freq // BAUD
    timeout = 40 * 10 * bit                       # 40 byte times of silence
    top = EchoTop(clk_freq=clk_freq, max_payload=256, timeout=timeout)
    build_and_test(top, "uart_framing_tb", build_dir_for(request), sim=sim, env={
        "CLK_FREQ": clk_freq, "BAUD": BAUD, "TIMEOUT_CYCLES": timeout, "MAX_PAYLOAD": 256,
    })


@pytest.mark.parametrize("sim", SIMS)
def test_framing_streams(request, sim):
    max_payload, timeout = 64, 300
    top = FramingTop(max_payload=max_payload, timeout=timeout)
    build_and_test(top, "framing_streams_tb", build_dir_for(request), sim=sim, env={
        "TIMEOUT_CYCLES": timeout, "MAX_PAYLOAD": max_payload,
    })
