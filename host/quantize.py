"""Quantization of level-space features into the per-feature fields of the row layout.

Level values, rounding and the field contents follow docs/NUMERICS.md sections 2 and 3. The
input of :func:`encode` is in *level space*: features scaled to [-1, 1] (or [0, 1]) and
multiplied by ``fmt.top``, so that every value lies on or between the device's levels.

Random draws: stochastic rounding uses ``rng.random(shape) < p`` with ``p`` the position of the
value inside its interval. A double-sampled format draws the uniforms of sample A (dot product)
first, then those of sample B (update), each as one array of the input's shape; PAIR and
COMPACT therefore carry the same samples for the same seed.
"""

import numpy as np

from zipml import contract
from zipml.contract import Encoding, LevelMode

__all__ = ["ROUNDINGS", "check_table", "level_values", "quantize", "quantize_interval",
           "encode", "decode", "encode_labels"]

ROUNDINGS = ("stochastic", "nearest")


def check_table(table, bits):
    """A level table as an int64 array, or ValueError saying what is wrong with it.

    Parameters
    ----------
    table : sequence of int
        ``2**bits`` strictly increasing integers within +-TABLE_MAX (units 2**-TABLE_FRAC).
    bits : int
    """
    if table is None:
        raise ValueError("a TABLE format needs a level table (table=...)")
    t = np.asarray(table)
    if t.ndim != 1 or len(t) != 1 << bits:
        raise ValueError(f"a {bits}-bit level table has {1 << bits} entries, got shape {t.shape}")
    if not (np.issubdtype(t.dtype, np.integer) or
            (np.issubdtype(t.dtype, np.floating) and np.all(t == np.round(t)))):
        raise ValueError(f"level table entries must be integers (units of "
                         f"2**-{contract.TABLE_FRAC}), got {t.dtype}")
    t = t.astype(np.int64)
    if np.any(np.abs(t) > contract.TABLE_MAX):
        bad = int(np.argmax(np.abs(t) > contract.TABLE_MAX))
        raise ValueError(f"level table entry {bad} = {t[bad]} is outside "
                         f"+-{contract.TABLE_MAX}")
    if np.any(np.diff(t) <= 0):
        bad = int(np.argmax(np.diff(t) <= 0))
        raise ValueError(f"level table must be strictly increasing: entry {bad + 1} = "
                         f"{t[bad + 1]} follows {t[bad]}")
    return t


def _level_ints(fmt, table):
    """Integer level values (units 2**-fmt.value_frac) as int64."""
    if fmt.encoding == Encoding.RAW:
        raise ValueError("RAW samples have no levels")
    if fmt.levels == LevelMode.TABLE:
        return check_table(table, fmt.bits)
    return np.asarray(contract.uniform_level_ints(fmt.bits, fmt.levels), dtype=np.int64)


def level_values(fmt, table=None):
    """The level values of a format, as a float64 array (exactly the device's numbers).

    Parameters
    ----------
    fmt : contract.Format
        Not RAW.
    table : sequence of int, optional
        Required for ``LevelMode.TABLE``.
    """
    return _level_ints(fmt, table) / float(1 << fmt.value_frac)


def _check_rounding(rounding, rng):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    if rounding == "stochastic" and rng is None:
        raise ValueError("stochastic rounding needs rng (a numpy Generator)")


_MAX_BUCKETS = 4096


def _interval(v, levels):
    """``min(searchsorted(levels, v, "right") - 1, s - 2)`` for v inside the levels, fast.

    A bucket table a quarter of the smallest gap wide gives the interval to within one (any
    three neighbouring buckets hold at most one level); one comparison each way makes it exact.
    """
    last = len(levels) - 2
    h = np.diff(levels).min() / 4
    n_buckets = int(np.ceil((levels[-1] - levels[0]) / h)) + 1
    if n_buckets > _MAX_BUCKETS:
        i = np.searchsorted(levels, v, side="right") - 1
        return np.minimum(i, last, out=i)
    starts = levels[0] + h * np.arange(n_buckets + 1)
    first = np.clip(np.searchsorted(levels, starts, side="right") - 1, 0, last)
    k = ((v - levels[0]) * (1 / h)).astype(np.intp)
    np.clip(k, 0, n_buckets, out=k)
    i = first[k]
    i -= v < levels[i]
    i += v >= levels[i + 1]
    return np.minimum(i, last, out=i)


def _locate(values, levels):
    """Clip ``values`` to the levels; return (interval index, position in [0, 1] inside it)."""
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or len(levels) < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("levels must be a strictly increasing 1-D array of at least 2 values")
    v = np.clip(np.asarray(values, dtype=np.float64), levels[0], levels[-1])
    i = _interval(v, levels)
    lo = levels[i]
    return i, (v - lo) / (levels[i + 1] - lo)


def _round_up(frac, rounding, rng):
    if rounding == "nearest":
        return frac >= 0.5
    return rng.random(frac.shape) < frac


def quantize_interval(values, levels, rounding, rng=None):
    """Round values to levels; return (interval index, up bit).

    The code is ``interval + up``. A value exactly on level j has interval ``min(j, s - 2)``.

    Parameters
    ----------
    values : float array, any shape
        Clipped to [levels[0], levels[-1]] first.
    levels : float array (s,)
        Strictly increasing.
    rounding : "stochastic" or "nearest"
        Stochastic: up with probability (v - l_i) / (l_{i+1} - l_i), iff ``u < p`` with
        ``u = rng.random(values.shape)``. Nearest: the nearest level, ties up (no draws).
    rng : numpy.random.Generator, optional
        Needed for stochastic rounding.
    """
    _check_rounding(rounding, rng)
    i, frac = _locate(values, levels)
    return i, _round_up(frac, rounding, rng)


def quantize(values, levels, rounding, rng=None):
    """Round values to levels; return integer level codes (int64, the input's shape).

    Same rules and parameters as :func:`quantize_interval`.
    """
    i, up = quantize_interval(values, levels, rounding, rng)
    return i + up


def encode(xv, fmt, rounding, rng, table=None):
    """Quantize a level-space feature matrix into the fields of ``fmt.encoding``.

    SINGLE: the code. PAIR: code A | code B << b. COMPACT: interval | up_A << k | up_B << (k+1),
    k = ``fmt.index_bits``. RAW: ``round(x * 2**RAW_FRAC)`` as 32-bit two's complement (x clipped
    to [-1, 1], no draws). A and B are independent draws (A's uniforms first); with nearest
    rounding they coincide.

    Parameters
    ----------
    xv : float array (N, n)
        Features in level space (scaled features times ``fmt.top``).
    fmt : contract.Format
    rounding : "stochastic" or "nearest"
    rng : numpy.random.Generator or None
    table : sequence of int, optional
        Level table for ``LevelMode.TABLE``.

    Returns
    -------
    uint32 array (N, n)
    """
    xv = np.asarray(xv, dtype=np.float64)
    if xv.ndim != 2:
        raise ValueError(f"encode needs a 2-D (rows, features) array, got shape {xv.shape}")
    if fmt.encoding == Encoding.RAW:
        fixed = np.floor(np.clip(xv, -1.0, 1.0) * float(1 << contract.RAW_FRAC) + 0.5)
        return fixed.astype(np.int32).view(np.uint32)
    _check_rounding(rounding, rng)
    i, frac = _locate(xv, level_values(fmt, table))
    up_a = _round_up(frac, rounding, rng)
    if fmt.encoding == Encoding.SINGLE:
        return (i + up_a).astype(np.uint32)
    up_b = up_a if rounding == "nearest" else _round_up(frac, rounding, rng)
    i = i.astype(np.uint32)
    if fmt.encoding == Encoding.PAIR:
        return (i + up_a) | ((i + up_b) << np.uint32(fmt.bits))
    k = fmt.index_bits
    return i | (up_a.astype(np.uint32) << np.uint32(k)) | (up_b.astype(np.uint32) <<
                                                           np.uint32(k + 1))


def _code_values(codes, fmt, table):
    """Integer level values (int64) of level codes."""
    if fmt.levels == LevelMode.TABLE:
        return check_table(table, fmt.bits)[codes]
    codes = codes.astype(np.int64)
    if fmt.levels == LevelMode.UNIFORM_SIGNED:
        return 2 * codes - (fmt.n_levels - 1)
    return codes


def decode(fields, fmt, table=None):
    """The integer values (vA, vB) a lane derives from its fields.

    Uniform signed: 2k - (s - 1); unsigned: k; table: table[k]; RAW: the signed 32-bit value.
    The integers stand for value / 2**fmt.value_frac. For SINGLE and RAW, vA equals vB.

    Parameters
    ----------
    fields : unsigned integer array, any shape
        As produced by :func:`encode` (bits above ``fmt.field_bits`` must be zero).
    fmt : contract.Format
    table : sequence of int, optional
        Level table for ``LevelMode.TABLE``.

    Returns
    -------
    (int64 array, int64 array), each of the fields' shape
    """
    fields = np.asarray(fields)
    if not np.issubdtype(fields.dtype, np.integer):
        raise ValueError(f"fields must be integers, got {fields.dtype}")
    fields = fields.astype(np.int64)
    fb = fmt.field_bits
    if fields.size and (fields.min() < 0 or fields.max() >> fb):
        raise ValueError(f"fields must be unsigned {fb}-bit values for {fmt}")
    if fmt.encoding == Encoding.RAW:
        v = fields.astype(np.uint32).view(np.int32).astype(np.int64)
        return v, v.copy()
    b, mask = fmt.bits, (1 << fmt.bits) - 1
    if fmt.encoding == Encoding.SINGLE:
        v = _code_values(fields, fmt, table)
        return v, v.copy()
    if fmt.encoding == Encoding.PAIR:
        code_a, code_b = fields & mask, (fields >> b) & mask
    else:
        k = fmt.index_bits
        i = fields & ((1 << k) - 1)
        # An index past the last interval (s - 2) is never written by encode(); the device
        # does not reject it either: the code wraps modulo s (docs/NUMERICS.md, section 3).
        code_a, code_b = (i + ((fields >> k) & 1)) & mask, (i + ((fields >> (k + 1)) & 1)) & mask
    return _code_values(code_a, fmt, table), _code_values(code_b, fmt, table)


def encode_labels(y):
    """Scaled float labels as int32 fixed point with LABEL_FRAC fractional bits.

    Rounds half up and saturates to the signed LABEL_BITS range (never wraps).

    Parameters
    ----------
    y : float array (N,)
    """
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        bad = int(np.argmax(~np.isfinite(y.ravel())))
        raise ValueError(f"label {bad} is not finite ({y.ravel()[bad]})")
    lo, hi = contract.sat_limits(contract.LABEL_BITS)
    fixed = np.floor(y * float(1 << contract.LABEL_FRAC) + 0.5)
    return np.clip(fixed, lo, hi).astype(np.int32)
