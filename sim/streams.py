"""Drive and receive Amaranth ``lib.stream`` ports from cocotb, with random idle and stalls.

A stream member ``x`` of a converted component appears as ``x__valid``, ``x__ready`` and
``x__payload``. Payloads are plain integers (pack structs with their layout's bit offsets).

Signals are changed just after a falling clock edge and handshakes are judged from values
settled then, so both helpers work the same on any simulator.
"""

import random

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamPort", "stream_put", "stream_get"]


class StreamPort:
    """The three signals of stream member ``name`` of ``dut``, and its clock.

    Parameters
    ----------
    dut : cocotb handle
    name : str
        Member name, e.g. ``"i_stream"``.
    clk : cocotb handle, optional
        Default ``dut.clk``.
    """

    def __init__(self, dut, name, clk=None):
        self.name = name
        self.clk = clk if clk is not None else dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload", None)   # absent for a 0-bit payload


def _rng(rng):
    return rng if rng is not None else random.Random(0)


async def _next_cycle(clk):
    await RisingEdge(clk)
    await FallingEdge(clk)


async def stream_put(port, payloads, *, idle=0.0, rng=None):
    """Send ``payloads`` (ints) into an ``In`` stream, idling with probability ``idle`` per cycle.

    Call it with the clock running; it returns after the last handshake, with ``valid`` low.
    """
    rng = _rng(rng)
    await FallingEdge(port.clk)
    for payload in payloads:
        while idle and rng.random() < idle:
            port.valid.value = 0
            await _next_cycle(port.clk)
        port.valid.value = 1
        if port.payload is not None:
            port.payload.value = payload
        while True:
            await ReadOnly()
            fire = bool(port.ready.value)
            await _next_cycle(port.clk)
            if fire:
                break
    port.valid.value = 0


async def stream_get(port, count, *, backpressure=0.0, rng=None, timeout=None):
    """Receive ``count`` payloads (ints) from an ``Out`` stream.

    Lowers ``ready`` with probability ``backpressure`` per cycle. Raises TimeoutError after
    ``timeout`` cycles without a transfer (None: wait forever).
    """
    rng = _rng(rng)
    received = []
    waited = 0
    await FallingEdge(port.clk)
    while len(received) < count:
        ready = not (backpressure and rng.random() < backpressure)
        port.ready.value = int(ready)
        await ReadOnly()
        if ready and port.valid.value:
            received.append(int(port.payload.value) if port.payload is not None else None)
            waited = 0
        else:
            waited += 1
            if timeout is not None and waited > timeout:
                raise TimeoutError(f"{port.name}: no transfer for {timeout} cycles "
                                   f"({len(received)} of {count} received)")
        await _next_cycle(port.clk)
    port.ready.value = 0
    return received
