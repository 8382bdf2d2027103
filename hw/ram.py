"""Block RAM read ports for memories whose reads never depend on a write in the same cycle.

Amaranth's synchronous read port returns the old word when it reads the address its memory's
write port writes in the same cycle. The iCE40's block RAM leaves that case undefined, so yosys
emulates it with a register for the written word and address and a compare and select per read
port (30 to 190 logic cells for each of the device's memories, and a compare on the read
address's path). :func:`unchecked_read_port` is a combinational read port and a register, which
yosys merges back into the block RAM's read port (``memory_dff``), with the memory's
``no_rw_check`` attribute: the port then leaves the collision undefined too, at no cost.

The port's register has an initial value in Amaranth but none in hardware (as Amaranth's own
read ports): the board builds run :data:`NO_INIT` so that yosys adds no logic to give one
before the first read, and no design reads a port's word before it has read one.

A memory may use these ports only where the design never uses a word read in the cycle its
address is written (each caller says why). Simulation checks it: elaborated without a platform,
a colliding read returns the old word inverted, so a design that used one would no longer match
the golden model.
"""

from amaranth import Mux, Signal
from amaranth.lib import memory

__all__ = ["NO_RW_CHECK", "NO_INIT", "ReadPort", "unchecked_read_port"]

#: The memory attribute that lets yosys leave a read-during-write collision undefined.
NO_RW_CHECK = {"no_rw_check": 1}

#: Yosys command, run after reading the design: the read registers lose their initial value.
NO_INIT = "setattr -unset init w:*__unchecked %a"


class ReadPort:
    """A registered read port: ``addr`` and ``en`` in, ``data`` (the word at ``addr`` a cycle
    after ``en``) out, as :class:`amaranth.lib.memory.ReadPort`."""

    def __init__(self, addr, en, data):
        self.addr, self.en, self.data = addr, en, data


def unchecked_read_port(m, mem: memory.Memory, write: memory.WritePort, platform, name):
    """A read port of ``mem`` (``sync`` domain) that yosys maps without a read-during-write
    check; ``write`` is ``mem``'s write port. Marks ``mem`` with :data:`NO_RW_CHECK`."""
    mem.attrs.update(NO_RW_CHECK)
    port = mem.read_port(domain="comb")
    word = port.data
    if platform is None:                # simulation: poison a colliding read
        collides = write.en.any() & (write.addr == port.addr)
        word = Mux(collides, ~port.data, port.data)
    en = Signal(init=1, name=f"{name}_en")
    data = Signal(mem.shape, name=f"{name}__unchecked", reset_less=True)
    with m.If(en):
        m.d.sync += data.eq(word)
    return ReadPort(port.addr, en, data)
