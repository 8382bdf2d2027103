"""The supported boards, described in one place: platform, device parameters, clocks, PLL
settings, UART rate, synthesis options and programmer.

PLL settings are computed here the way the vendor-neutral tools compute them (``icepll`` from
IceStorm for iCE40, ``ecppll`` from Project Trellis for ECP5), so a board entry only states the
clock it wants; ``tests/test_build.py`` checks the results against both tools.
"""

import struct
from dataclasses import dataclass

from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

__all__ = ["ICE40PLL", "ECP5PLL", "icepll", "ecppll", "Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class ICE40PLL:
    """SB_PLL40 settings (simple feedback): f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    f_out: float
    f_vco: float
    f_pfd: float


@dataclass(frozen=True)
class ECP5PLL:
    """EHXPLLL settings (CLKOP feedback): f_out = f_in * CLKFB_DIV / CLKI_DIV."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    f_in: float
    f_out: float
    f_vco: float


def icepll(f_in, f_out):
    """iCE40 PLL settings closest to ``f_out`` (Hz), searched like IceStorm's ``icepll``.

    Limits (iCE40 datasheet): PFD 10..133 MHz, VCO 533..1066 MHz, DIVQ 1..6.
    """
    fin, req = f_in / 1e6, f_out / 1e6
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if best is None or abs(out - req) < abs(best[3] - req):
                    best = (divr, divf, divq, out, vco, pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {req} MHz from {fin} MHz")
    divr, divf, divq, out, vco, pfd = best
    filter_range = 1 + sum(pfd >= edge for edge in (17, 26, 44, 66, 101))
    return ICE40PLL(divr, divf, divq, filter_range, f_in, out * 1e6, vco * 1e6, pfd * 1e6)


def _f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def ecppll(f_in, f_out):
    """ECP5 PLL settings closest to ``f_out`` (Hz), searched like Project Trellis' ``ecppll``.

    Limits: PFD 3.125..400 MHz, VCO 400..800 MHz; ties go to the VCO nearest 600 MHz. CLKOP
    is shifted by 180 degrees as ``ecppll`` does (its single-precision arithmetic included).
    """
    fin, req = _f32(f_in / 1e6), _f32(f_out / 1e6)
    error, best = float("inf"), None
    for clki_div in range(1, 129):
        pfd = _f32(fin / clki_div)
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            for clkop_div in range(1, 129):
                vco = _f32(_f32(pfd * clkfb_div) * clkop_div)
                if not 400 <= vco <= 800:
                    continue
                out = _f32(vco / clkop_div)
                err = abs(out - req)
                if err < error or (err == error and abs(vco - 600) < abs(best[3] - 600)):
                    error, best = err, (clki_div, clkfb_div, clkop_div, vco, out)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {req} MHz from {fin} MHz")
    clki_div, clkfb_div, clkop_div, vco, out = best
    ns_phase = _f32(1 / (out * 1e6) * 0.5)
    cphase = int(ns_phase * (vco * 1e6))
    return ECP5PLL(clki_div, clkfb_div, clkop_div, cphase, f_in,
                   f_in * clkfb_div / clki_div, f_in * clkfb_div * clkop_div / clki_div)


@dataclass(frozen=True)
class Board:
    """One supported board.

    Members
    -------
    name : str
        The name on the command line and the folder under ``bitstreams/``.
    platform : type
        The amaranth-boards platform class.
    family : str
        ``"ice40"`` or ``"ecp5"``.
    width : int
        W, bits per stream word of the device built for this board.
    n_max : int
        Largest number of features (model words) the device holds.
    lanes : int
        Fields the trainer processes per word (:class:`~zipml.hw.pipeline.SGDPipeline`).
    dsp : bool or int
        Lane products on the hard multipliers: all (``True``) or those of the first k lanes.
    mul_stages : int
        Registers in the lane products (2: multiplier inputs and outputs).
    serial : bool
        Train with the lane-serial pipeline (:class:`~zipml.hw.serial.SerialSGDPipeline`):
        one field per cycle, every format; ``lanes``, ``dsp`` and ``mul_stages`` do not apply.
    memory_words : int
        Resident memory, W-bit words.
    spram : bool
        Build on the iCE40UP5K's hard blocks: resident memory in its SPRAM
        (:class:`~zipml.hw.resident.ResidentMemory`) rather than block RAM, and the rows of an
        epoch counted in SB_MAC16s (:mod:`zipml.hw.dsp`).
    core : str
        The core its committed bitstream carries (:data:`zipml.hw.top.CORES`).
    clk_in : float
        Board oscillator, Hz (the platform's default clock resource).
    clk_target : float
        Requested core clock, Hz; :attr:`pll` gives the achieved one, :attr:`clk_freq`.
    baud : int
        UART line rate towards the board's USB bridge.
    uart_bridge : str
    synth_opts : str
        Extra ``synth_ice40`` / ``synth_ecp5`` options.
    nextpnr_opts : str
        Extra nextpnr options (the seed is added by the build).
    programmer : str
        Tool that loads a bitstream into the FPGA (see :meth:`program_command`).
    install_hint : str
        How to get :attr:`programmer` when it is missing.
    """
    name: str
    platform: type
    family: str
    width: int
    n_max: int
    lanes: int
    dsp: bool | int
    mul_stages: int
    serial: bool
    memory_words: int
    spram: bool
    core: str
    clk_in: float
    clk_target: float
    baud: int
    uart_bridge: str
    synth_opts: str
    nextpnr_opts: str
    programmer: str
    install_hint: str

    @property
    def device(self):
        return self.platform.device

    @property
    def pll(self):
        """PLL settings for :attr:`clk_target` (computed once per call; cheap for iCE40,
        about 0.1 s for ECP5)."""
        if self.family == "ice40":
            return icepll(self.clk_in, self.clk_target)
        return _ecppll_cached(self.clk_in, self.clk_target)

    @property
    def clk_freq(self):
        """Achieved core clock, Hz."""
        return self.pll.f_out

    @property
    def bitstream_ext(self):
        return ".bin" if self.family == "ice40" else ".bit"

    def program_command(self, bitstream, *, flash=False):
        """The command line that loads ``bitstream`` into the FPGA's configuration memory, or
        with ``flash`` into the configuration flash (kept across power cycles)."""
        if self.programmer == "iceprog":
            return ["iceprog", *([] if flash else ["-S"]), str(bitstream)]
        return ["openFPGALoader", "-b", "ulx3s", "-f" if flash else "-m", str(bitstream)]


_ECPPLL_CACHE = {}


def _ecppll_cached(f_in, f_out):
    key = (f_in, f_out)
    if key not in _ECPPLL_CACHE:
        _ECPPLL_CACHE[key] = ecppll(f_in, f_out)
    return _ECPPLL_CACHE[key]


BOARDS = {
    "icebreaker": Board(
        name="icebreaker", platform=ICEBreakerPlatform, family="ice40",
        width=32, n_max=256,
        # The device with the lane-serial trainer: about 4,500 of the UP5K's 5,280 LCs
        # (docs/PIPELINE.md). Resident data in the four SPRAM blocks: 32,768 words of 32 bits.
        lanes=32, dsp=False, mul_stages=1, serial=True, memory_words=32768, spram=True,
        core="device",
        # 30 MHz / 3 Mbaud = 10 cycles per bit (the dispatcher's handshakes and tests from
        # registers, its state machine one-hot: docs/PIPELINE.md)
        clk_in=12e6, clk_target=30e6,
        baud=3_000_000, uart_bridge="FT2232H",
        synth_opts="-dsp",                       # iCE40 infers SB_MAC16 only with -dsp
        # the analytic placer (nextpnr's default): the annealing one fails to place a carry
        # chain at 96% of the part
        nextpnr_opts="",
        programmer="iceprog",
        install_hint="apt-get install fpga-icestorm (or build IceStorm's iceprog)",
    ),
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform=ULX3S_85F_Platform, family="ecp5",
        # W = 64 with 16 lanes: fields of 4 bits and more (SINGLE b >= 4, PAIR and COMPACT
        # b >= 2, RAW) at one word per cycle, narrower ones in parts of 16 fields (SINGLE
        # b = 3: 7); the lane products of the first 8 lanes on the 18 x 18 multipliers, the
        # rest in logic. W = 128 with 32 lanes synthesizes and places, but routing stalls
        # (docs/PIPELINE.md).
        width=64, n_max=256,
        lanes=16, dsp=8, mul_stages=2, serial=False, memory_words=8192, spram=False,
        core="device",
        # 71.875 MHz (25 MHz * 23 / 8) / 24 cycles per bit = 2.995 Mbaud (0.17% slow): the
        # design that takes narrow fields in parts missed 75 MHz by 0.6 to 2.2 MHz at seeds 1-3
        clk_in=25e6, clk_target=71.875e6,
        baud=3_000_000, uart_bridge="FT231X",
        synth_opts="",
        nextpnr_opts="--router router2",         # routes the trainer in about 60 iterations
        programmer="openFPGALoader",
        install_hint="apt-get install openfpgaloader (or see trabucayre/openFPGALoader)",
    ),
    "ulx3s-85f-w128": Board(
        name="ulx3s-85f-w128", platform=ULX3S_85F_Platform, family="ecp5",
        # W = 128 with the same 16 lanes: fields of 8 bits and more (SINGLE b = 8, PAIR
        # b >= 4, COMPACT b >= 6, RAW) at one word per cycle, twice the W = 64 build's fields
        # per cycle for them; narrower ones in parts of at most 16 fields (32 lanes do not
        # route).
        # 4,096 resident words (64 KB, as the W = 64 build's 8,192): with 8,192 the design
        # that takes narrow fields in parts stalls in router2 (about 2,000 overused wires)
        width=128, n_max=256,
        lanes=16, dsp=8, mul_stages=2, serial=False, memory_words=4096, spram=False,
        core="device",
        # 60 MHz / 3 Mbaud = 20 cycles per bit (at 75 MHz router2 does not converge)
        clk_in=25e6, clk_target=60e6,
        baud=3_000_000, uart_bridge="FT231X",
        synth_opts="",
        nextpnr_opts="--router router2",
        programmer="openFPGALoader",
        install_hint="apt-get install openfpgaloader (or see trabucayre/openFPGALoader)",
    ),
}


def get_board(name):
    """The :class:`Board` called ``name`` (ValueError names the known ones)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {', '.join(BOARDS)}") from None
