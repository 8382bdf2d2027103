"""8N1 UART transmitter and receiver with byte streams.

The bit period is a whole number of clock cycles fixed at elaboration time
(:func:`uart_divisor`); there is no flow control.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["DEFAULT_BAUD", "uart_divisor", "UARTTransmitter", "UARTReceiver"]

#: The default line rate (an FT2232H runs 3 Mbaud exactly from a 12 or 48 MHz clock).
DEFAULT_BAUD = 3_000_000


def uart_divisor(clk_freq, baud, *, tolerance=0.02):
    """Clock cycles per bit; raise ValueError if fewer than 4 or off by more than ``tolerance``."""
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"{clk_freq} Hz is too slow for {baud} baud (need 4 cycles per bit)")
    error = abs(clk_freq / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"{clk_freq} Hz cannot make {baud} baud (nearest is off by "
                         f"{error:.1%})")
    return divisor


class UARTTransmitter(wiring.Component):
    """8N1 transmitter: one start bit, 8 data bits LSB first, one stop bit.

    Back-to-back bytes leave with no gap (10 bit periods each).

    Parameters
    ----------
    clk_freq : float
        Frequency of the ``sync`` domain, Hz.
    baud : int

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes to send; accepted when the previous stop bit ends.
    tx : Out(1)
        Serial output, idle high.
    """

    def __init__(self, *, clk_freq, baud=DEFAULT_BAUD):
        self.clk_freq = clk_freq
        self.baud = baud
        self.divisor = uart_divisor(clk_freq, baud)
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        bits = Signal(range(10))      # bits left to shift out after the current one
        shreg = Signal(9)             # data bits then the stop bit

        m.d.comb += self.i_stream.ready.eq((timer == 0) & (bits == 0))
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(bits != 0):
            m.d.sync += [
                self.tx.eq(shreg[0]),
                shreg.eq(shreg >> 1),
                bits.eq(bits - 1),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(self.i_stream.valid):
            m.d.sync += [
                self.tx.eq(0),
                shreg.eq(Cat(self.i_stream.payload, 1)),
                bits.eq(9),
                timer.eq(self.divisor - 1),
            ]
        return m


class UARTReceiver(wiring.Component):
    """8N1 receiver: 2-flop synchroniser, start bit confirmed and bits sampled mid-bit.

    A byte whose stop bit reads 0 is dropped and flagged; the receiver then waits for the line
    to return high (so a held-low line, a break, yields one error and no bytes). There is no
    back-pressure: a byte still unaccepted when the next one completes is replaced (``overrun``).

    Parameters
    ----------
    clk_freq : float
        Frequency of the ``sync`` domain, Hz.
    baud : int

    Members
    -------
    rx : In(1)
        Serial input, idle high (asynchronous).
    o_stream : Out(stream.Signature(8))
        Received bytes.
    framing_error : Out(1)
        Pulses for one cycle when a stop bit reads 0.
    overrun : Out(1)
        Pulses for one cycle when a byte replaces one the consumer has not taken.
    """

    def __init__(self, *, clk_freq, baud=DEFAULT_BAUD):
        self.clk_freq = clk_freq
        self.baud = baud
        self.divisor = uart_divisor(clk_freq, baud)
        super().__init__({
            "rx": In(1, init=1),
            "o_stream": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "IDLE"       # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),
                        bit.eq(bit + 1),
                        timer.eq(self.divisor - 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.o_stream.payload.eq(shreg), self.o_stream.valid.eq(1)]
                        m.d.comb += self.overrun.eq(self.o_stream.valid & ~self.o_stream.ready)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m
