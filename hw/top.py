"""Board tops: the board's oscillator through a PLL to the core clock, reset held until the PLL
locks, the UART pins, and a *core*: any component with a serial ``rx`` input and ``tx`` output.

Cores available now (:data:`CORES`):

- ``device``: the training device, :class:`~zipml.hw.device.Device` (UART, framing, the
  dispatcher, resident memory and :class:`~zipml.hw.pipeline.SGDPipeline` or, on boards too
  small for W lanes, :class:`~zipml.hw.serial.SerialSGDPipeline`) with the board's W, lanes,
  n_max and memory;
- ``echo``: the protocol echo device, UART -> :class:`~zipml.hw.framing.FrameReceiver` ->
  :class:`~zipml.hw.framing.FrameTransmitter` -> UART. Every request is answered with the
  receiver's verdict as status, its ``cmd``, ``seq`` and payload; the whole link can be
  exercised on a board before the training device exists.
- ``pipeline``: a synthesis-only probe around :class:`~zipml.hw.pipeline.SGDPipeline` with the
  board's W and n_max. Its configuration shifts in from ``rx``, its input streams come from an
  LFSR and all its outputs are XOR-reduced onto ``tx``, so nothing can be optimised away; it
  measures utilisation and Fmax, it is not a usable device.
"""

from amaranth import Cat, ClockDomain, ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import fifo, io, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..protocol import RX_TIMEOUT
from .framing import FrameReceiver, FrameTransmitter
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["EchoCore", "PipelineProbe", "BoardTop", "CORES", "make_core"]


class EchoCore(wiring.Component):
    """The protocol echo device.

    Parameters
    ----------
    clk_freq : float
        Frequency of the ``sync`` domain, Hz.
    baud : int
    max_payload : int
        Longest request payload accepted (longer ones are answered TOO_LARGE).

    Members
    -------
    rx : In(1)
        Serial input from the host (asynchronous, idle high).
    tx : Out(1)
        Serial output to the host, idle high.
    """

    def __init__(self, *, clk_freq, baud, max_payload=1024):
        self.clk_freq = clk_freq
        self.baud = baud
        self.max_payload = max_payload
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTReceiver(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.uart_tx = uart_tx = UARTTransmitter(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.receiver = receiver = FrameReceiver(
            max_payload=self.max_payload, timeout=round(RX_TIMEOUT * self.clk_freq))
        m.submodules.transmitter = transmitter = FrameTransmitter()
        # The receiver's payload comes straight from block RAM and the transmitter's ready
        # depends on the byte (escapes take two cycles): a FIFO stage keeps that loop out of
        # one clock cycle.
        m.submodules.payload = payload = fifo.SyncFIFOBuffered(width=8, depth=4)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.o_stream, receiver.i_stream)
        wiring.connect(m, receiver.o_header, transmitter.i_header)
        wiring.connect(m, receiver.o_payload, payload.w_stream)
        wiring.connect(m, payload.r_stream, transmitter.i_payload)
        wiring.connect(m, transmitter.o_stream, uart_tx.i_stream)
        return m


class PipelineProbe(wiring.Component):
    """:class:`~zipml.hw.pipeline.SGDPipeline` (or with ``serial``,
    :class:`~zipml.hw.serial.SerialSGDPipeline`) with every port driven or observed, for
    synthesis only.

    Parameters
    ----------
    width : int
        W of the pipeline.
    n_max : int
    lanes, tables, dsp, mul_stages, serial
        As the board's (:class:`~zipml.hw.boards.Board`).

    Members
    -------
    rx : In(1)
        Shifted (after a 2-flop synchroniser) into the configuration and the strobes.
    tx : Out(1)
        Registered XOR of every pipeline output.
    """

    def __init__(self, *, width, n_max, lanes=None, tables=True, dsp=False, mul_stages=1,
                 serial=False):
        self.width = width
        self.n_max = n_max
        self.lanes = lanes
        self.tables = tables
        self.dsp, self.mul_stages, self.serial = dsp, mul_stages, serial
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        from .serial import make_trainer

        m = Module()
        m.submodules.pipeline = dut = make_trainer(
            self.width, self.n_max, max_table_bits=8 if self.tables else 1, serial=self.serial,
            lanes=self.lanes, dsp=self.dsp, mul_stages=self.mul_stages)

        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)
        cfg_bits = len(dut.config.as_value())
        shreg = Signal(cfg_bits + 3)
        m.d.sync += shreg.eq(Cat(rx, shreg[:-1]))
        m.d.sync += [
            dut.config.as_value().eq(shreg[:cfg_bits]),
            dut.start.eq(shreg[cfg_bits]),
            dut.load.eq(shreg[cfg_bits + 1]),
            dut.read.eq(shreg[cfg_bits + 2]),
        ]

        # 32-bit Galois LFSR (x^32 + x^22 + x^2 + x + 1); wide words shift in 32 new bits a cycle.
        lfsr = Signal(32, init=1)
        m.d.sync += lfsr.eq((lfsr >> 1) ^ (0x80200003 * lfsr[0]))
        word = Signal(self.width)
        m.d.sync += word.eq(Cat(lfsr, word[:-32]) if self.width > 32 else lfsr)
        table_bits = len(dut.i_table.payload.as_value())
        m.d.comb += [
            dut.i_stream.payload.eq(word),
            dut.i_stream.valid.eq(lfsr[3]),
            dut.i_model.payload.eq(word[-32:]),
            dut.i_model.valid.eq(lfsr[7]),
            dut.i_table.payload.eq(word[:table_bits]),
            dut.i_table.valid.eq(lfsr[11]),
            dut.o_model.ready.eq(lfsr[13]),
        ]

        observed = Cat(dut.busy, dut.i_stream.ready, dut.i_model.ready, dut.i_table.ready,
                       dut.o_model.valid, dut.o_model.payload, dut.rows, dut.saturated,
                       dut.epochs, dut.cycles)
        m.d.sync += self.tx.eq(observed.xor())
        return m


#: Core variants, by the name ``--core`` takes.
CORES = ("device", "echo", "pipeline")


def make_core(board, core="device", *, build_id=0):
    """The core called ``core`` for ``board`` (a :class:`~zipml.hw.boards.Board`)."""
    if core == "device":
        from .device import Device
        return Device(board.width, board.n_max, board.memory_words, clk_freq=board.clk_freq,
                      baud=board.baud, lanes=board.lanes, dsp=board.dsp,
                      mul_stages=board.mul_stages, serial=board.serial, spram=board.spram,
                      build_id=build_id)
    if core == "echo":
        return EchoCore(clk_freq=board.clk_freq, baud=board.baud)
    if core == "pipeline":
        return PipelineProbe(width=board.width, n_max=board.n_max, lanes=board.lanes,
                             dsp=board.dsp, mul_stages=board.mul_stages, serial=board.serial)
    raise ValueError(f"unknown core {core!r}; known: {', '.join(CORES)}")


class BoardTop(wiring.Component):
    """A board's clocking, reset and UART around a core.

    The ``sync`` domain runs from the PLL at ``board.clk_freq``; its reset is held while the
    PLL is unlocked and for :attr:`por_cycles` cycles after it locks (iCE40 block RAMs read as
    zero for ~3 us after configuration). LED 0 lights once the core is out of reset.

    Parameters
    ----------
    board : Board
    core : wiring.Component
        Has ``rx: In(1)`` and ``tx: Out(1)``; built for ``board.clk_freq``.
    """

    def __init__(self, board, core):
        self.board = board
        self.core = core
        self.por_cycles = max(1, round(15e-6 * board.clk_freq))
        super().__init__({})

    def _pll_ice40(self, m, platform, clk_out, locked):
        # The iCEBreaker's 12 MHz oscillator drives pin 35 (IOT_46b_G0), the UP5K PLL's input
        # pad: the PLL takes it straight from the pad (SB_PLL40_PAD), not from a global net.
        p = self.board.pll
        clk_pin = platform.request(platform.default_clk, dir="-")
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_PLLOUT_SELECT="GENCLK",
            p_DIVR=p.divr,
            p_DIVF=p.divf,
            p_DIVQ=p.divq,
            p_FILTER_RANGE=p.filter_range,
            i_PACKAGEPIN=clk_pin.io,
            i_RESETB=1,
            i_BYPASS=0,
            o_PLLOUTGLOBAL=clk_out,
            o_LOCK=locked,
        )

    def _pll_ecp5(self, m, platform, clk_out, locked):
        p = self.board.pll
        m.submodules.clk_buf = clk_in = io.Buffer(
            "i", platform.request(platform.default_clk, dir="-"))
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.f_out / 1e6:g}",
            a_ICP_CURRENT="12",
            a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED",
            p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA",
            p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div,
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_cphase,
            p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=p.clkfb_div,
            i_RST=0,
            i_STDBY=0,
            i_CLKI=clk_in.i,
            i_CLKFB=clk_out,
            i_PHASESEL0=0,
            i_PHASESEL1=0,
            i_PHASEDIR=1,
            i_PHASESTEP=1,
            i_PHASELOADREG=1,
            i_PLLWAKESYNC=0,
            i_ENCLKOP=0,
            o_CLKOP=clk_out,
            o_LOCK=locked,
        )

    def elaborate(self, platform):
        m = Module()
        board = self.board

        clk = Signal()
        locked = Signal()
        if board.family == "ice40":
            self._pll_ice40(m, platform, clk, locked)
        else:
            self._pll_ecp5(m, platform, clk, locked)
        platform.add_clock_constraint(clk, board.clk_freq)

        # Reset: a reset-less counter in the PLL clock, restarted while the PLL is unlocked.
        m.domains.pll = ClockDomain("pll", reset_less=True)
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("pll").eq(clk), ClockSignal("sync").eq(clk)]
        locked_s = Signal()
        m.submodules.sync_lock = FFSynchronizer(locked, locked_s, o_domain="pll")
        timer = Signal(range(self.por_cycles + 1))
        with m.If(~locked_s):
            m.d.pll += timer.eq(0)
        with m.Elif(timer != self.por_cycles):
            m.d.pll += timer.eq(timer + 1)
        running = Signal()
        m.d.pll += running.eq(timer == self.por_cycles)
        m.d.comb += ResetSignal("sync").eq(~running)

        m.submodules.core = self.core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [self.core.rx.eq(rx_buf.i), tx_buf.o.eq(self.core.tx), led_buf.o.eq(running)]
        return m
