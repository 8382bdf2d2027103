"""Lane logic shared by the dot product and the update: which formats a lane sees, turning a
field into level codes, and narrow multiplies written as shift-and-add.

Code values are normalised to :data:`VALUE_FRAC` fractional bits (``v << (8 - b)`` for uniform
grids, table entries as they are), so every code format reaches the arithmetic as one signed
9-bit value: ``floor(sum(w * v) / 2**f)`` and ``round(c * v / 2**(6 + f))`` stay exactly the
same numbers (numerator and denominator scale alike).
"""

from amaranth import Cat, Const, Mux, Signal, Value, signed
from amaranth.lib import data, memory

from ..contract import (
    MAX_BITS,
    TABLE_BITS,
    TABLE_FRAC,
    Encoding,
    Format,
    format_fits,
    pipeline_lanes,
)

__all__ = ["VALUE_FRAC", "VALUE_SHAPE", "FMT_ID_BITS", "BLOCK_RAM", "fmt_id", "format_id",
           "format_cases", "format_constants",
           "code_formats", "all_formats",
           "lane_formats", "lane_table_bits", "lane_codes", "uniform_value", "shift_add_mul",
           "sum_tree"]

#: Fractional bits of every normalised code value.
VALUE_FRAC = TABLE_FRAC
#: Shape of a normalised code value (uniform or table).
VALUE_SHAPE = signed(TABLE_BITS)
#: Bits of a format id: encoding (2 bits) above bits - 1.
_B_BITS = (MAX_BITS - 1).bit_length()
FMT_ID_BITS = _B_BITS + 2


def fmt_id(encoding, bits):
    """The id a run-time format selects its per-lane case with."""
    return (int(encoding) << _B_BITS) | (bits - 1)


def format_id(encoding, bits):
    """The run-time :func:`fmt_id` of a configuration's ``encoding`` and ``bits`` (b >= 1)."""
    return Cat((bits - 1)[:_B_BITS], encoding)


def format_cases(m, encoding, fid, formats):
    """Yield each of ``formats`` (RAW last, as :func:`all_formats` gives them) inside the case
    that selects it at run time (RAW by ``encoding``, code formats by ``fid``): statements added
    in the loop body apply when that format is configured."""
    with m.If(encoding == Encoding.RAW):
        yield formats[-1]
    with m.Else():
        with m.Switch(fid):
            for f in formats[:-1]:
                with m.Case(fmt_id(f.encoding, f.bits)):
                    yield f


#: Memory attribute that asks yosys for block RAM.
BLOCK_RAM = {"ram_style": "block"}


def format_constants(m, name, encoding, bits, formats, fields):
    """The configured format's constants, a cycle after ``encoding`` and ``bits``: ``fields``
    maps a name to ``(shape, value)``, ``value(fmt)`` the constant of each of ``formats`` (RAW
    last, as :func:`all_formats` gives them). They are read from a table in block RAM at the
    format id (RAW at any ``bits``), not selected by a case per constant, which on iCE40 costs
    a few LUTs per bit of every one of them.

    Returns a view of ``fields``' layout.
    """
    layout = data.StructLayout({key: shape for key, (shape, _) in fields.items()})
    by_id = {fmt_id(f.encoding, f.bits): f for f in formats[:-1]}
    init = []
    for index in range(1 << FMT_ID_BITS):
        fmt = formats[-1] if index >> _B_BITS == Encoding.RAW else by_id.get(index)
        init.append({key: value(fmt) if fmt else 0 for key, (_, value) in fields.items()})
    m.submodules[name] = table = memory.Memory(shape=layout, depth=len(init), init=init,
                                               attrs=BLOCK_RAM)
    port = table.read_port()
    m.d.comb += port.addr.eq(format_id(encoding, bits))
    return port.data


def code_formats(width=None, lanes=None):
    """The code formats (SINGLE/PAIR/COMPACT, b = 1..MAX_BITS); given ``width`` and ``lanes``,
    only those a build of ``lanes`` lanes takes (:func:`zipml.contract.format_fits`)."""
    formats = [Format(enc, b) for enc in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
               for b in range(1, MAX_BITS + 1)]
    if lanes is None:
        return formats
    return [f for f in formats if format_fits(width, f, lanes)]


def all_formats(width=None, lanes=None):
    """:func:`code_formats` and RAW."""
    return [*code_formats(width, lanes), Format(Encoding.RAW, 1)]


def lane_formats(width, lane, lanes=None):
    """Code formats (of a build with ``lanes`` lanes) in which lane ``lane`` of a word (or of
    a part of one, :func:`zipml.contract.pipeline_lanes`) holds a field."""
    return [f for f in code_formats(width, lanes) if lane < pipeline_lanes(width, f, lanes)]


def lanes_word_bits(width, lanes, build_lanes=None):
    """``(lo, hi)``: the bits of a ``width``-bit word that any of ``lanes`` reads, in any format
    of a build with ``build_lanes`` lanes (RAW included)."""
    spans = [(j * f.field_bits, (j + 1) * f.field_bits) for f in all_formats(width, build_lanes)
             for j in lanes if j < pipeline_lanes(width, f, build_lanes)]
    return min(lo for lo, _ in spans), max(hi for _, hi in spans)


def lane_table_bits(width, lane, max_table_bits=MAX_BITS, lanes=None):
    """log2 of the level-table entries lane ``lane`` needs (0: no table formats reach it)."""
    bits = [f.bits for f in lane_formats(width, lane, lanes) if f.bits >= 2]
    return min(max(bits), max_table_bits) if bits else 0


def lane_codes(m, word, lane, width, selects, sample, lanes=None):
    """Level code of ``sample`` ("A" or "B") in lane ``lane`` for the configured format.

    ``selects`` maps each code format's :func:`fmt_id` to a flag, set for the configured one
    only (registers: the selection is static while a run decodes, so no compare of the format
    id sits between a word's bits and the code).

    Returns ``(k, n)``: the code and the code left-aligned to MAX_BITS bits (``k << (8 - b)``),
    both zero for formats that leave the lane empty.
    """
    k = Signal(MAX_BITS, name=f"k{sample}{lane}")
    n = Signal(MAX_BITS, name=f"n{sample}{lane}")
    ks, ns = [], []
    for fmt in lane_formats(width, lane, lanes):
        fb, b = fmt.field_bits, fmt.bits
        field = word[lane * fb:(lane + 1) * fb]
        if fmt.encoding == Encoding.SINGLE:
            code = field
        elif fmt.encoding == Encoding.PAIR:
            code = field[:b] if sample == "A" else field[b:]
        else:
            ib = fmt.index_bits
            index = field[:ib] if ib else Const(0, 1)
            # an index past the last interval wraps modulo s (NUMERICS.md section 3)
            code = (index + field[ib if sample == "A" else ib + 1])[:b]
        selected = selects[fmt_id(fmt.encoding, b)]
        ks.append(Mux(selected, code[:b], 0))
        ns.append(Mux(selected, code[:b] << (MAX_BITS - b), 0))
    m.d.comb += [k.eq(_or(ks)), n.eq(_or(ns))]
    return k, n


def _or(values):
    """The bitwise OR of ``values`` (0 for none)."""
    result = Const(0, 1)
    for v in values:
        result = result | v
    return result


def uniform_value(n, half, unsigned_levels):
    """Normalised uniform level value of a left-aligned code ``n``.

    Signed grids: ``(2k - (s - 1)) << (8 - b) = 2n + 2**(8 - b) - 2**8`` (``half`` is
    ``2**(8 - b)``); unsigned grids: ``n``.
    """
    signed_value = (n << 1) + half - (1 << MAX_BITS)
    return Mux(unsigned_levels, n, signed_value)


def shift_add_mul(m, a, b, name, parts=1):
    """``a * b`` for a narrow signed ``b``, as a sum of shifted copies of ``a``.

    Keeps yosys from mapping narrow products onto hard multipliers (see TOOLCHAIN.md). With
    ``parts > 1`` returns that many partial sums (to register before adding them up).
    """
    terms = []
    for k in range(len(b)):
        term = Mux(b[k], a << k, 0)
        terms.append(-term if k == len(b) - 1 and b.shape().signed else term)
    if parts == 1:
        return sum_tree(m, terms, name)
    size = -(-len(terms) // parts)
    return [sum_tree(m, terms[i:i + size], f"{name}_p{i // size}")
            for i in range(0, len(terms), size)]


def sum_tree(m, terms, name):
    """A balanced tree of two-input additions (combinational), each sum a kept signal.

    Left alone, yosys merges a tree of additions into one multi-operand adder and maps it to
    full adders in LUTs (a carry-save tree): about twice the logic of one carry chain per
    addition on ECP5 and iCE40 (measured in docs/PIPELINE.md). The ``keep`` attribute on every
    partial sum stops the merge; the numbers are the same.
    """
    terms = [Value.cast(t) for t in terms]
    if not terms:
        return Const(0)
    level = 0
    while len(terms) > 1:
        nxt = []
        for i in range(0, len(terms), 2):
            if i + 1 < len(terms):
                total = terms[i] + terms[i + 1]
                s = Signal(total.shape(), name=f"{name}_s{level}_{i // 2}",
                           attrs={"keep": 1})
                m.d.comb += s.eq(total)
                nxt.append(s)
            else:
                nxt.append(terms[i])
        terms, level = nxt, level + 1
    return terms[0]
