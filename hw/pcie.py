"""PCIe top: the Xilinx XDMA IP in AXI-Stream mode carrying the protocol's byte stream, and the
Vivado project that builds it.

Board: the RHS Research LiteFury (XC7A100T-FGG484-2) or NiteFury II (XC7A200T-FBG484-2), M.2
2280 cards with a PCIe x4 link, described by amaranth-boards as ``LitefuryPlatform`` and
``NitefuryIIPlatform``. Data path::

    PCIe -- xdma_0 -- m_axis_h2c_0 --> AXISToBytes --> core --> BytesToAXIS --> s_axis_c2h_0

The XDMA runs one host-to-card and one card-to-host streaming channel of 64 bits at 125 MHz
(x1, x2 or x4 at 2.5 GT/s, or x1 at 5 GT/s: every link that fits 64 bits x 125 MHz). The core
runs in the XDMA's ``axi_aclk`` domain (``sync`` here). :func:`build_vivado_project` writes the
Verilog, the constraints and a Tcl script that creates the IP and runs Vivado to a bitstream.
"""

from pathlib import Path

from amaranth import ClockDomain, Instance, Module, Signal
from amaranth.build import Attrs, Clock, DiffPairs, PinsN, Resource, Subsignal
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from zipml.hw.axis import AXISByteBridge, check_byte_core
from zipml.hw.framing import FrameReceiver, FrameTransmitter
from zipml.protocol import RX_TIMEOUT

__all__ = ["XDMA_CLK_FREQ", "XDMA_DATA_WIDTH", "BOARDS", "FrameEcho", "xdma_properties",
           "pcie_resource", "PCIeTop", "build_vivado_project"]

#: The XDMA's user clock (``axi_aclk``) and AXI-Stream width as configured here.
XDMA_CLK_FREQ = 125e6
XDMA_DATA_WIDTH = 64

#: Board names for :func:`build_vivado_project`: amaranth-boards platform class names.
BOARDS = {
    "litefury": ("amaranth_boards.nitefury", "LitefuryPlatform"),
    "nitefury": ("amaranth_boards.nitefury", "NitefuryIIPlatform"),
}


class FrameEcho(wiring.Component):
    """Stand-in device core: answers every request frame with its verdict and, for good frames,
    its payload (:class:`~zipml.hw.framing.FrameReceiver` into
    :class:`~zipml.hw.framing.FrameTransmitter`).

    Parameters
    ----------
    max_payload : int
    timeout : int
        Cycles of input silence after which a partial frame is dropped.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Request bytes.
    o_stream : Out(stream.Signature(8))
        Response bytes.
    """

    def __init__(self, *, max_payload=1024, timeout):
        self.max_payload = max_payload
        self.timeout = timeout
        super().__init__({
            "i_stream": In(stream.Signature(8)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = FrameReceiver(max_payload=self.max_payload, timeout=self.timeout)
        m.submodules.tx = tx = FrameTransmitter()
        wiring.connect(m, wiring.flipped(self.i_stream), rx.i_stream)
        wiring.connect(m, rx.o_header, tx.i_header)
        wiring.connect(m, rx.o_payload, tx.i_payload)
        wiring.connect(m, tx.o_stream, wiring.flipped(self.o_stream))
        return m


#: Link configurations that fill at most 64 bits at 125 MHz: lanes x GT/s -> Vivado's names.
_SPEEDS = {1: "2.5_GT/s", 2: "5.0_GT/s"}


def xdma_properties(*, lanes=4, gen=1):
    """The XDMA IP's ``CONFIG.*`` properties for this design, as an ordered dict.

    Parameters
    ----------
    lanes : int
        1, 2 or 4.
    gen : int
        PCIe generation, 1 (2.5 GT/s) or 2 (5 GT/s); ``lanes * gen`` must not exceed 4 so the
        link fits the 64-bit, 125 MHz AXI-Stream.
    """
    if lanes not in (1, 2, 4) or gen not in _SPEEDS:
        raise ValueError(f"unsupported link x{lanes} Gen{gen}")
    if lanes * gen > 4:
        raise ValueError(f"x{lanes} Gen{gen} needs more than 64 bits at 125 MHz")
    return {
        "mode_selection": "Advanced",
        "functional_mode": "DMA",
        "pl_link_cap_max_link_width": f"X{lanes}",
        "pl_link_cap_max_link_speed": _SPEEDS[gen],
        "ref_clk_freq": "100_MHz",
        "axi_data_width": f"{XDMA_DATA_WIDTH}_bit",
        "axisten_freq": str(round(XDMA_CLK_FREQ / 1e6)),
        "xdma_axi_intf_mm": "AXI_Stream",
        "xdma_wnum_chnl": "1",          # host-to-card channels
        "xdma_rnum_chnl": "1",          # card-to-host channels
        "xdma_num_usr_irq": "1",
        "axilite_master_en": "false",
        "cfg_mgmt_if": "false",
        # 0x70<gen><lanes>: the IDs the Xilinx XDMA driver (dma_ip_drivers) binds to.
        "pf0_device_id": f"70{gen}{lanes}",
    }


def pcie_resource(platform, lanes=4):
    """The board's PCIe connector as a resource for an XDMA endpoint, named ``pcie_x<lanes>``.

    Pins come from the platform's own ``pcie`` resource; what changes: PERST# is an input (the
    host drives it), the reference clock and lanes are raw pins without an I/O standard (they
    are transceiver pins, buffered by IBUFDS_GTE2 and the IP), the clock carries its 100 MHz
    constraint, and only the first ``lanes`` lanes are kept.
    """
    stock = {sub.name: sub for sub in platform.resources["pcie", 0].ios}

    def pins(name):
        return stock[name].ios[0]

    clk, rx, tx = pins("clk"), pins("rx"), pins("tx")
    return Resource(f"pcie_x{lanes}", 0,
        Subsignal("rst", PinsN(" ".join(pins("rst").names), dir="i"),
                  Attrs(IOSTANDARD="LVCMOS33", PULLUP="TRUE")),
        Subsignal("clkreq", PinsN(" ".join(pins("clkreq").names), dir="o"),
                  Attrs(IOSTANDARD="LVCMOS33")),
        Subsignal("clk", DiffPairs(clk.p.names[0], clk.n.names[0], dir="i"), Clock(100e6)),
        Subsignal("rx", DiffPairs(" ".join(rx.p.names[:lanes]), " ".join(rx.n.names[:lanes]),
                                  dir="i")),
        Subsignal("tx", DiffPairs(" ".join(tx.p.names[:lanes]), " ".join(tx.n.names[:lanes]),
                                  dir="o")),
    )


class PCIeTop(wiring.Component):
    """Board top: XDMA endpoint, AXI-Stream <-> byte adapters and a byte-stream core.

    Parameters
    ----------
    core : wiring.Component or None
        Has ``i_stream: In(stream.Signature(8))`` (requests) and
        ``o_stream: Out(stream.Signature(8))`` (responses), clocked by ``sync`` at
        :data:`XDMA_CLK_FREQ`. Default: a :class:`FrameEcho`.
    lanes, gen : int
        The link; see :func:`xdma_properties`.
    flush_timeout : int or None
        See :class:`~zipml.hw.axis.BytesToAXIS`.

    The top has no ports of its own: it requests the board's resources. LED 0 shows the PCIe
    link, LED 1 blinks at about 1 Hz while ``axi_aclk`` runs.
    """

    def __init__(self, core=None, *, lanes=4, gen=1, flush_timeout=None):
        if core is None:
            core = FrameEcho(max_payload=1024, timeout=round(RX_TIMEOUT * XDMA_CLK_FREQ))
        check_byte_core(core)
        xdma_properties(lanes=lanes, gen=gen)        # validates the link
        self.core = core
        self.lanes = lanes
        self.gen = gen
        self.flush_timeout = flush_timeout
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        pcie = platform.request(f"pcie_x{self.lanes}", 0, dir="-")
        m.submodules.perst = perst = io.Buffer("i", pcie.rst)     # high while PERST# is low
        m.submodules.clkreq = clkreq = io.Buffer("o", pcie.clkreq)

        refclk = Signal()
        m.submodules.refclk_buf = Instance("IBUFDS_GTE2",
            i_I=pcie.clk.p, i_IB=pcie.clk.n, i_CEB=0, o_O=refclk)

        m.domains.sync = cd_sync = ClockDomain("sync")
        axi_aresetn = Signal()
        link_up = Signal()
        m.submodules.bridge = bridge = AXISByteBridge(
            self.core, XDMA_DATA_WIDTH, flush_timeout=self.flush_timeout)
        m.submodules.xdma = Instance("xdma_0",
            i_sys_clk=refclk,
            i_sys_rst_n=~perst.i,
            o_user_lnk_up=link_up,
            i_pci_exp_rxp=pcie.rx.p, i_pci_exp_rxn=pcie.rx.n,
            o_pci_exp_txp=pcie.tx.p, o_pci_exp_txn=pcie.tx.n,
            o_axi_aclk=cd_sync.clk,
            o_axi_aresetn=axi_aresetn,
            i_usr_irq_req=0,
            # host to card
            o_m_axis_h2c_tdata_0=bridge.s_axis_tdata,
            o_m_axis_h2c_tkeep_0=bridge.s_axis_tkeep,
            o_m_axis_h2c_tlast_0=bridge.s_axis_tlast,
            o_m_axis_h2c_tvalid_0=bridge.s_axis_tvalid,
            i_m_axis_h2c_tready_0=bridge.s_axis_tready,
            # card to host
            i_s_axis_c2h_tdata_0=bridge.m_axis_tdata,
            i_s_axis_c2h_tkeep_0=bridge.m_axis_tkeep,
            i_s_axis_c2h_tlast_0=bridge.m_axis_tlast,
            i_s_axis_c2h_tvalid_0=bridge.m_axis_tvalid,
            o_s_axis_c2h_tready_0=bridge.m_axis_tready,
        )
        m.submodules.reset_sync = ResetSynchronizer(~axi_aresetn, domain="sync")
        m.d.comb += clkreq.o.eq(1)                             # CLKREQ# low

        half_second = round(XDMA_CLK_FREQ / 2)
        heartbeat = Signal(range(half_second))
        blink = Signal()
        with m.If(heartbeat == 0):
            m.d.sync += [heartbeat.eq(half_second - 1), blink.eq(~blink)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat - 1)
        for index, value in enumerate((link_up, blink)):
            m.submodules[f"led{index}"] = led = io.Buffer("o", platform.request("led", index,
                                                                                dir="-"))
            m.d.comb += led.o.eq(value)
        return m


_BUILD_TCL = """\
# Build the {name} bitstream: vivado -mode batch -source build.tcl
# Runs {name}.tcl in this folder: it creates the project and the xdma_0 IP, reads the
# Verilog and constraints, and runs synthesis, implementation and write_bitstream.
cd [file dirname [file normalize [info script]]]
source {name}.tcl
"""


def _xdma_tcl(properties):
    lines = [f"    CONFIG.{key} {{{value}}} \\" for key, value in properties.items()]
    return "\n".join([
        "# xdma_0: PCIe endpoint, DMA over AXI-Stream, one H2C and one C2H channel.",
        "file mkdir ip",
        "create_ip -name xdma -vendor xilinx.com -library ip -module_name xdma_0 -dir ip -force",
        "set_property -dict [list \\",
        *lines,
        "] [get_ips xdma_0]",
        "generate_target all [get_ips xdma_0]",
        "synth_ip [get_ips xdma_0]",
    ])


_PCIE_XDC = """\
# PERST# is asynchronous to every clock.
set_false_path -from [get_ports {{{rst}}}]
"""


def build_vivado_project(build_dir, *, board="litefury", core=None, lanes=4, gen=1,
                         flush_timeout=None, name="zipml_pcie"):
    """Write a Vivado project for the PCIe top into ``build_dir``; run nothing.

    Files: ``<name>.v`` (the design, from Amaranth), ``<name>.xdc`` (pins and clocks from the
    platform), ``pcie.xdc`` (extra timing constraints), ``<name>.tcl`` (project, XDMA IP,
    synthesis to bitstream; from amaranth's Vivado flow), ``build.tcl`` (entry point:
    ``vivado -mode batch -source build.tcl``) and ``build_<name>.sh``.

    Parameters
    ----------
    build_dir : str or Path
    board : str
        A key of :data:`BOARDS`.
    core, lanes, gen, flush_timeout
        See :class:`PCIeTop`.
    name : str
        The top module's name.

    Returns
    -------
    dict
        File kind (``verilog``, ``xdc``, ``pcie_xdc``, ``tcl``, ``build_tcl``, ``script``) to
        path.
    """
    import importlib

    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; choose from {', '.join(BOARDS)}")
    module, cls = BOARDS[board]
    platform = getattr(importlib.import_module(module), cls)(toolchain="Vivado")
    resource = pcie_resource(platform, lanes)
    platform.add_resources([resource])
    rst_port = f"{resource.name}_0__rst__io"
    platform.add_file("pcie.xdc", _PCIE_XDC.format(rst=rst_port))
    top = PCIeTop(core, lanes=lanes, gen=gen, flush_timeout=flush_timeout)
    plan = platform.prepare(top, name,
                            script_after_read=_xdma_tcl(xdma_properties(lanes=lanes, gen=gen)))
    plan.files["build.tcl"] = _BUILD_TCL.format(name=name)
    root = Path(plan.extract(str(build_dir)))
    return {
        "verilog": root / f"{name}.v",
        "xdc": root / f"{name}.xdc",
        "pcie_xdc": root / "pcie.xdc",
        "tcl": root / f"{name}.tcl",
        "build_tcl": root / "build.tcl",
        "script": root / f"build_{name}.sh",
    }

