"""The numerics contract: every format the gateware, the golden model and the host must agree on.

This module is the single source of truth. It is pure Python (no numpy, no amaranth) so that the
gateware can evaluate it at elaboration time, the golden model and the host at run time, and all
three see the same numbers. ``docs/NUMERICS.md`` describes the same rules in prose.

Conventions
-----------
- A *word* is W bits (W in :data:`WORD_WIDTHS`); on the host a word is held as ``W // 32``
  little-endian 32-bit limbs (limb 0 holds bits 0..31).
- A *row* is one sample: ``n`` features then the label, packed into :func:`row_words` words.
- Fixed-point numbers are two's complement integers ``v`` standing for ``v / 2**FRAC``.
- ``floor`` means arithmetic shift right; ``round`` means add half an LSB, then floor
  (round half up). ``sat(v, bits)`` clamps to the signed range of ``bits`` bits.
"""

import enum
from dataclasses import dataclass

__all__ = [
    "WORD_WIDTHS", "MAX_BITS", "LABEL_BITS", "Encoding", "Loss", "LevelMode",
    "MODEL_BITS", "MODEL_FRAC", "LABEL_FRAC", "LR_BITS", "LR_FRAC", "SCALAR_BITS",
    "SCALAR_FRAC", "RAW_FRAC", "TABLE_FRAC", "TABLE_BITS", "TABLE_MAX", "SIGMOID_ENTRIES",
    "SIGMOID_STEP_LOG2", "Format", "sat", "sat_limits", "round_shift", "floor_shift",
    "sigmoid_table", "uniform_level_ints", "level_frac", "top_level", "row_words",
    "lanes_in_word", "lanes_in_last_word", "pipeline_lanes", "pipeline_row_words", "format_fits",
    "fitting_bits", "accumulator_bits",
]

# --- words and rows ---------------------------------------------------------------------------

#: Supported word widths W (bits per stream word).
WORD_WIDTHS = (32, 64, 128, 256)

#: Supported sample precisions b (bits per quantized sample).
MAX_BITS = 8

#: The label occupies the top LABEL_BITS bits of the last word of every row.
LABEL_BITS = 32


class Encoding(enum.IntEnum):
    """How one feature of one row is stored.

    SINGLE:  one b-bit level code; the same sample feeds the dot product and the update
             (the naive, biased scheme).
    PAIR:    two independent b-bit codes: bits [0, b) = sample A (dot product),
             bits [b, 2b) = sample B (model update). The reference design's format.
    COMPACT: interval index i (``ceil(log2(s - 1))`` bits) then one up bit for A and one for B:
             code_A = i + up_A, code_B = i + up_B. Same samples as PAIR, fewer bits.
    RAW:     the full-precision value, 32-bit fixed point with RAW_FRAC fractional bits.
    """
    SINGLE = 0
    PAIR = 1
    COMPACT = 2
    RAW = 3


class Loss(enum.IntEnum):
    """The gradient-scalar function applied to the dot product (see :func:`sigmoid_table`)."""
    SQUARED = 0
    LOGISTIC = 1
    HINGE = 2


class LevelMode(enum.IntEnum):
    """Where level values come from.

    UNIFORM_SIGNED:   code k stands for (2k - (s-1)) / 2**b, s = 2**b  (symmetric around 0).
    UNIFORM_UNSIGNED: code k stands for k / 2**b.
    TABLE:            code k stands for table[k] / 2**TABLE_FRAC (a table loaded at run time).
    """
    UNIFORM_SIGNED = 0
    UNIFORM_UNSIGNED = 1
    TABLE = 2


# --- fixed-point formats ------------------------------------------------------------------------

#: Model words: signed MODEL_BITS, MODEL_FRAC fractional bits (range [-128, 128)).
MODEL_BITS = 32
MODEL_FRAC = 24

#: Label: signed LABEL_BITS, LABEL_FRAC fractional bits (same scale as the model).
LABEL_FRAC = 24

#: Learning rate: unsigned LR_BITS, LR_FRAC fractional bits (range [0, 1)).
LR_BITS = 24
LR_FRAC = 24

#: Gradient scalar g (after the loss function): signed MODEL_BITS, MODEL_FRAC fractional bits.
#: Update scalar c = round(g * lr): signed SCALAR_BITS, SCALAR_FRAC fractional bits ([-2, 2)).
SCALAR_BITS = 32
SCALAR_FRAC = 30

#: RAW samples: signed 32 bits, RAW_FRAC fractional bits (|value| <= 1).
RAW_FRAC = 30

#: Level tables: signed TABLE_BITS-bit integers, TABLE_FRAC fractional bits, |entry| <= TABLE_MAX.
TABLE_BITS = 9
TABLE_FRAC = 8
TABLE_MAX = (1 << TABLE_FRAC) - 1

#: Logistic loss: sigmoid table with SIGMOID_ENTRIES entries over margins [-8, 8),
#: one entry per 2**-SIGMOID_STEP_LOG2.
SIGMOID_ENTRIES = 256
SIGMOID_STEP_LOG2 = 4


def sat_limits(bits):
    """Return (min, max) of a signed two's complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def sat(value, bits):
    """Clamp ``value`` to the signed range of ``bits`` bits (never wrap)."""
    lo, hi = sat_limits(bits)
    return lo if value < lo else hi if value > hi else value


def floor_shift(value, shift):
    """``floor(value / 2**shift)`` for integers (arithmetic shift right)."""
    return value >> shift


def round_shift(value, shift):
    """``floor(value / 2**shift + 1/2)``: round half up. ``shift`` must be >= 1."""
    return (value + (1 << (shift - 1))) >> shift


def sigmoid_table():
    """The logistic loss's sigmoid, as integers with MODEL_FRAC fractional bits.

    Entry i holds ``round(2**MODEL_FRAC / (1 + exp(-m)))`` at the bin centre
    ``m = (i - SIGMOID_ENTRIES/2 + 1/2) / 2**SIGMOID_STEP_LOG2``. A margin ``z`` (MODEL_FRAC
    fractional bits) selects entry
    ``clamp(floor(z / 2**(MODEL_FRAC - SIGMOID_STEP_LOG2)) + 128, 0, 255)``.
    """
    import math
    half = SIGMOID_ENTRIES // 2
    return tuple(
        int(math.floor((1 << MODEL_FRAC) / (1 + math.exp(-((i - half + 0.5) /
                                                          (1 << SIGMOID_STEP_LOG2)))) + 0.5))
        for i in range(SIGMOID_ENTRIES))


# --- level grids -------------------------------------------------------------------------------

def uniform_level_ints(bits, mode):
    """Integer level values of the uniform grid with ``2**bits`` levels (units 2**-bits)."""
    s = 1 << bits
    if mode == LevelMode.UNIFORM_SIGNED:
        return tuple(2 * k - (s - 1) for k in range(s))
    if mode == LevelMode.UNIFORM_UNSIGNED:
        return tuple(range(s))
    raise ValueError(f"{mode!r} is not a uniform level mode")


def level_frac(encoding, bits, mode):
    """Fractional bits of the integer value a lane derives from a code (or a RAW sample)."""
    if encoding == Encoding.RAW:
        return RAW_FRAC
    if mode == LevelMode.TABLE:
        return TABLE_FRAC
    return bits


def top_level(encoding, bits, mode):
    """The largest level value, as a fraction: the range a scaled feature of 1.0 maps onto.

    Uniform signed grids span [-(1 - 2**-b), 1 - 2**-b], unsigned ones [0, 1 - 2**-b], tables
    [-(1 - 2**-8), 1 - 2**-8] (or [0, ...]), RAW [-1, 1]. The host multiplies scaled features by
    this factor before quantizing, and undoes it when it reports the model.
    """
    if encoding == Encoding.RAW:
        return 1.0
    frac = level_frac(encoding, bits, mode)
    return ((1 << frac) - 1) / (1 << frac)


# --- one format, and the layout of a row -------------------------------------------------------

@dataclass(frozen=True)
class Format:
    """A sample format: encoding, bits per sample and where level values come from.

    Parameters
    ----------
    encoding : Encoding
    bits : int
        b, 1..MAX_BITS (ignored for RAW, which is always 32-bit fixed point).
    levels : LevelMode
    """
    encoding: Encoding = Encoding.PAIR
    bits: int = 4
    levels: LevelMode = LevelMode.UNIFORM_SIGNED

    def __post_init__(self):
        object.__setattr__(self, "encoding", Encoding(self.encoding))
        object.__setattr__(self, "levels", LevelMode(self.levels))
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be between 1 and {MAX_BITS}, not {self.bits}")
        if self.levels == LevelMode.TABLE and self.bits < 2 and self.encoding != Encoding.RAW:
            raise ValueError("a level table needs at least 2 bits (1 bit has only the endpoints)")

    @property
    def n_levels(self):
        """s, the number of levels (2**b)."""
        return 1 << self.bits

    @property
    def field_bits(self):
        """Bits one feature occupies in a word."""
        if self.encoding == Encoding.SINGLE:
            return self.bits
        if self.encoding == Encoding.PAIR:
            return 2 * self.bits
        if self.encoding == Encoding.COMPACT:
            return self.index_bits + 2
        return 32

    @property
    def index_bits(self):
        """COMPACT only: bits of the interval index, ceil(log2(s - 1))."""
        return (self.n_levels - 2).bit_length()

    @property
    def value_frac(self):
        """Fractional bits of the integer value a lane derives from a field."""
        return level_frac(self.encoding, self.bits, self.levels)

    @property
    def top(self):
        return top_level(self.encoding, self.bits, self.levels)

    @property
    def signed(self):
        return self.levels != LevelMode.UNIFORM_UNSIGNED

    @property
    def double_sampled(self):
        return self.encoding in (Encoding.PAIR, Encoding.COMPACT)


def lanes_in_word(width, fmt):
    """P: features in a full word."""
    return width // fmt.field_bits


def pipeline_lanes(width, fmt, lanes=None):
    """Fields the W-lane pipeline of ``lanes`` lanes (default W) takes per cycle, the P of its
    model layout (feature i in lane ``i % P`` at address ``i // P``); 0 if it cannot take
    ``fmt``.

    A word of at most ``lanes`` fields is taken whole. A word of more is taken in parts of the
    largest P <= ``lanes`` that divides its field count and leaves the label's top
    :data:`LABEL_BITS` bits free (a part carries the row's label), a part per cycle: every row
    then has :func:`pipeline_row_words` parts of P fields, the last one fewer.
    """
    p = lanes_in_word(width, fmt)
    if lanes is None or p <= lanes:
        return p
    room = (width - LABEL_BITS) // fmt.field_bits
    return next((d for d in range(min(lanes, room), 0, -1) if p % d == 0), 0)


def pipeline_row_words(width, fmt, n_features, lanes=None):
    """Words per row as the W-lane pipeline of ``lanes`` lanes (default W) takes them, a word per
    cycle: :func:`row_words`, or with words taken in parts (:func:`pipeline_lanes`), its parts
    (``ceil(n / P)``)."""
    if lanes is None or lanes_in_word(width, fmt) <= lanes:
        return row_words(width, fmt, n_features)
    if n_features < 1:
        raise ValueError("a row needs at least one feature")
    return -(-n_features // pipeline_lanes(width, fmt, lanes))


def format_fits(width, fmt, lanes):
    """Whether a device of ``lanes`` lanes takes ``fmt`` at word width ``width``: a word of
    at most ``lanes`` fields whole, one of more in parts (:func:`pipeline_lanes`; every code
    format at W >= 64, none with more than ``lanes`` fields at W = 32, where a row's last word
    is its label)."""
    return pipeline_lanes(width, fmt, lanes) > 0


def fitting_bits(width, encoding, lanes, max_bits=MAX_BITS):
    """The b in 1..max_bits at which ``encoding`` fits a device of ``lanes`` lanes."""
    return [b for b in range(1, max_bits + 1) if format_fits(width, Format(encoding, b), lanes)]


def lanes_in_last_word(width, fmt):
    """Features that fit below the label in the last word of a row."""
    return (width - LABEL_BITS) // fmt.field_bits


def row_words(width, fmt, n_features):
    """R: words per row. Features fill words in order (feature i at word i // P, lane i % P);
    the last word keeps its top LABEL_BITS bits for the label, so it holds at most
    :func:`lanes_in_last_word` features; unused fields are zero."""
    if n_features < 1:
        raise ValueError("a row needs at least one feature")
    p, p_last = lanes_in_word(width, fmt), lanes_in_last_word(width, fmt)
    if n_features <= p_last:
        return 1
    return 1 + -(-(n_features - p_last) // p)


def accumulator_bits(n_max):
    """Width that holds any dot product sum exactly: 32-bit model x 32-bit RAW sample, n_max
    terms (code formats need far fewer)."""
    return MODEL_BITS + 32 + max(1, (n_max - 1).bit_length()) + 1
