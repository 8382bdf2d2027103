"""Quantization of level-space features into the per-feature fields of the row layout.

Level values, rounding and the field contents follow docs/NUMERICS.md sections 2 and 3. The
input of :func:`encode` is in *level space*: features scaled to [-1, 1] (or [0, 1]) and
multiplied by ``fmt.top``, so that every value lies on or between the device's levels.

Rounding, exactly. A value x (float64), clipped to [l_0, l_{s-1}], lies in interval i,
[l_i, l_{i+1}] (a value exactly on level j has i = min(j, s - 2)), at position
p = (x - l_i) / (l_{i+1} - l_i). Its fixed-point position is ``T = i * 2**24 + floor(p * 2**24)``
(:data:`DITHER_BITS` = 24). T is exact for every x on the contract's level sets, uniform grids
and tables (any levels on a dyadic grid of at most 4096 cells); for other levels, such as the
float levels of ``zipml.host.levels.optimal_levels``, it is computed in float64 and may be one
unit off (which at most doubles the bound below). A stochastic sample is the code
``(T + U) >> 24``, U a uniform 24-bit integer: it rounds up with probability
``floor(p * 2**24) / 2**24`` instead of p, so

    x - 2**-24 * (l_{i+1} - l_i) < E[Q(x)] <= x:

the bias is below 2**-24 of the interval's width (2**-31 at 8 uniform signed bits, under the
least significant bit of RAW), and zero when p is a multiple of 2**-24 (values on a level
included). Nearest rounding is ``(T + 2**23) >> 24``: the nearest level, ties up, no draws.

Random draws. A stochastic sample first draws a 128-bit key from ``rng``,
``key = rng.integers(0, 2**64, size=2, dtype=np.uint64)``; its uniforms are then the stream

    u = np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(key))).integers(
        0, 2**32, size=values.size, dtype=np.uint32)

over the values in C order, and ``U = u >> 8``. A double-sampled format draws A's key, then
B's: PAIR and COMPACT carry the same samples for the same seed, SINGLE carries sample A. Value
number e always takes number e of its stream, so the fields depend neither on how the work is
cut into chunks nor on the number of threads.

Speed. Both samples of a value are made in one pass. The work runs in chunks of :data:`CHUNK`
values whose temporaries stay in the CPU caches, on the threads of :mod:`zipml.host.parallel`
(``ZIPML_HOST_THREADS``); a chunk moves its generators forward to its first value with
``advance``.
"""

import functools
import sys

import numpy as np

from zipml import contract
from zipml.contract import Encoding, LevelMode
from zipml.host.parallel import parallel_chunks, scratch, thread_state

__all__ = ["ROUNDINGS", "DITHER_BITS", "CHUNK", "check_table", "level_values",
           "quantize", "quantize_interval", "encode", "decode", "encode_labels"]

ROUNDINGS = ("stochastic", "nearest")

#: Fractional bits of the fixed-point position: the resolution of the rounding probability.
DITHER_BITS = 24
_ONE = 1 << DITHER_BITS

#: Values per unit of work: 20 to 45 bytes of temporaries each, a few MiB in all (within the
#: L2 and L3 caches), and enough values that the ~20 numpy calls per chunk cost little.
CHUNK = 1 << 16


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


# --- fixed-point positions -------------------------------------------------------------------

_MAX_BUCKETS = 4096
_MAX_CELLS = 4096


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


class _Grid:
    """How to compute the fixed-point positions T of values against one level set.

    ``uniform``: equally spaced levels, a power of two apart, l_0 / gap * 2**24 an integer:
    ``T = floor(x * 2**24 / gap) - l_0 * 2**24 / gap`` (the scaling is exact, the floor is taken
    before the integer offset is added). ``cells``: levels on a dyadic grid of at most
    ``_MAX_CELLS`` cells of 2**-f: with floor(x * 2**(f + 24)) - L_0 * 2**24 = m * 2**24 + F
    (cell m, 0 <= F < 2**24; exact in float64, then int64),
    ``T = i_m * 2**24 + floor(((m - b_m) * 2**24 + F) / w_m)``
    (b_m, w_m: start and width of the cell's interval, in cells); the division is a product with
    1 / w_m rounded up, exact since the quotient is an integer or at least 1 / w_m from one.
    ``float``: any other levels, in float64.
    """

    def __init__(self, levels):
        self.levels = levels
        self.s = s = len(levels)
        self.lo, self.hi = float(levels[0]), float(levels[-1])
        self.dtype = np.uint32 if s <= 256 else np.uint64
        self.kind = "float"
        if s > 256:
            return
        gaps = np.diff(levels)
        mantissa, exponent = np.frexp(gaps[0])
        if mantissa == 0.5 and np.all(gaps == gaps[0]):
            scale = float(np.ldexp(1.0, DITHER_BITS + 1 - int(exponent)))       # 2**24 / gap
            offset = -self.lo * scale
            lo, hi = self.lo * scale, self.hi * scale
            fits = hi < 2.0**32 if lo >= 0 else lo >= -2.0**31 and hi < 2.0**31
            if offset == np.floor(offset) and fits:
                self.kind, self.scale, self.bounds = "uniform", scale, (lo, hi)
                self.offset = np.uint32(int(offset) % (1 << 32))
                self.nonneg = lo >= 0
                return
        for f in range(31):
            cells = np.ldexp(levels, f)
            if np.all(cells == np.floor(cells)):
                break
        else:
            return
        n_cells = int(cells[-1] - cells[0])
        if n_cells > _MAX_CELLS or np.abs(cells).max() >= 2.0**28:
            return
        rel = cells - cells[0]
        m = np.arange(n_cells + 1, dtype=np.float64)
        i = np.minimum(np.searchsorted(rel, m, side="right") - 1, s - 2)
        width = rel[i + 1] - rel[i]
        recip = 1.0 / width
        inexact = np.frexp(width)[0] != 0.5                 # widths that are not powers of two
        recip[inexact] = np.nextafter(recip[inexact], np.inf)
        self.kind, self.f_scale = "cells", float(np.ldexp(1.0, f + DITHER_BITS))
        self.cell0 = float(cells[0]) * float(_ONE)
        self.k_table = ((m - rel[i]) + i * width) * float(_ONE)
        self.r_table = recip

    def positions(self, x):
        """T for a 1-D chunk of values (a per-thread scratch array: use it before the next
        call on this thread)."""
        n = len(x)
        t = scratch("t", n, self.dtype)
        if self.kind == "uniform":
            y = scratch("y", n, np.float64)
            np.multiply(x, self.scale, out=y)
            np.clip(y, *self.bounds, out=y)
            if self.nonneg:                          # truncation is the floor
                np.copyto(t, y, casting="unsafe")
            else:
                np.floor(y, out=y)
                np.copyto(t.view(np.int32), y, casting="unsafe")
            if self.offset:
                np.add(t, self.offset, out=t)
            return t
        if self.kind == "cells":
            y = scratch("y", n, np.float64)
            fl = scratch("fl", n, np.float64)
            big = scratch("big", n, np.int64)
            m = scratch("m", n, np.int64)
            np.clip(x, self.lo, self.hi, out=y)
            np.multiply(y, self.f_scale, out=y)         # exact: y = x * 2**(f + 24)
            np.floor(y, out=y)
            np.subtract(y, self.cell0, out=y)           # exact: integers
            np.copyto(big, y, casting="unsafe")         # (cell << 24) + F
            np.right_shift(big, DITHER_BITS, out=m)     # cell index
            np.bitwise_and(big, _ONE - 1, out=big)      # F
            np.take(self.k_table, m, out=fl, mode="clip")
            np.add(fl, big, out=fl)
            np.take(self.r_table, m, out=y, mode="clip")
            np.multiply(fl, y, out=fl)
            np.copyto(t, fl, casting="unsafe")
            return t
        levels = self.levels
        v = np.clip(x, self.lo, self.hi)
        i = _interval(v, levels)
        lo = levels[i]
        frac = np.floor((v - lo) / (levels[i + 1] - lo) * float(_ONE))
        np.minimum(frac, _ONE - 1, out=frac)
        t[:] = i
        t <<= DITHER_BITS
        t += frac.astype(self.dtype)
        t += v >= self.hi                               # the top level: (s - 1) * 2**24
        return t


def _grid(levels):
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or len(levels) < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("levels must be a strictly increasing 1-D array of at least 2 values")
    return _cached_grid(levels.tobytes())


@functools.lru_cache(maxsize=64)
def _cached_grid(key):
    return _Grid(np.frombuffer(key, dtype=np.float64))


# --- samples ---------------------------------------------------------------------------------

def _stream(rng):
    """The seed of one sample's uniforms, drawn from ``rng`` (module docs)."""
    return np.random.SeedSequence(rng.integers(0, 1 << 64, size=2, dtype=np.uint64))


def _uniforms(seed, start, n):
    """Numbers start .. start + n - 1 of the 32-bit stream of ``seed``, as a new array.

    Each thread keeps its generator of the last few streams and moves it forward to ``start``
    (``advance``: consecutive chunks cost nothing to reach)."""
    gens = thread_state().setdefault("generators", {})
    first = start // 2
    entry = gens.get(id(seed))
    if entry is None or entry[0] is not seed or entry[2] > first:
        if len(gens) > 8:
            gens.clear()
        entry = gens[id(seed)] = [seed, np.random.PCG64DXSM(seed), 0]
    _, bits, position = entry
    if first > position:
        bits.advance(first - position)
    count = (start + n + 1) // 2 - first
    raw = bits.random_raw(count)
    entry[2] = first + count
    if sys.byteorder == "little":
        halves = raw.view(np.uint32)
    else:                                               # low half first, as Generator.integers
        halves = np.empty(2 * len(raw), np.uint32)
        halves[0::2] = raw & np.uint64(0xFFFFFFFF)
        halves[1::2] = raw >> np.uint64(32)
    return halves[start % 2:start % 2 + n]


def _sample(t, seed, start):
    """Level codes of one sample of positions ``t`` (values start ... of the call), a new array
    (uint32 for uint32 positions). ``seed`` None: nearest rounding."""
    if seed is None:
        code = t + t.dtype.type(1 << (DITHER_BITS - 1))
    else:
        u = _uniforms(seed, start, len(t))
        u >>= np.uint32(32 - DITHER_BITS)
        if t.dtype == np.uint32:
            code = np.add(u, t, out=u)
        else:
            code = u + t
    code >>= code.dtype.type(DITHER_BITS)
    return code


def _flat_values(values):
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _rounding_inputs(values, levels, rounding, rng):
    """What both rounding entry points start from: the checked grid, the values' shape, the
    flat values and the sample stream's seed (None for nearest rounding)."""
    _check_rounding(rounding, rng)
    seed = _stream(rng) if rounding == "stochastic" else None
    return _grid(levels), np.shape(values), _flat_values(values), seed


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
        Stochastic: up with probability floor(p * 2**24) / 2**24, p = (v - l_i) / (l_{i+1} - l_i),
        iff ``(T & (2**24 - 1)) + U >= 2**24`` with T the fixed-point position and U the 24-bit
        uniforms of one key drawn from ``rng`` (module docs). Nearest: the nearest level, ties
        up (no draws).
    rng : numpy.random.Generator, optional
        Needed for stochastic rounding.

    Returns
    -------
    (intp array, bool array), each of the values' shape
    """
    grid, shape, x, seed = _rounding_inputs(values, levels, rounding, rng)
    interval = np.empty(x.size, np.intp)
    up = np.empty(x.size, np.bool_)
    last = grid.s - 2

    def work(a, b):
        t = grid.positions(x[a:b])
        code = _sample(t, seed, a)
        i = np.right_shift(t, t.dtype.type(DITHER_BITS))
        np.minimum(i, last, out=i)
        interval[a:b] = i
        np.not_equal(code, i, out=up[a:b])

    parallel_chunks(x.size, work, CHUNK)
    return interval.reshape(shape), up.reshape(shape)


def quantize(values, levels, rounding, rng=None):
    """Round values to levels; return integer level codes (int64, the input's shape).

    Same rules and parameters as :func:`quantize_interval`.
    """
    grid, shape, x, seed = _rounding_inputs(values, levels, rounding, rng)
    out = np.empty(x.size, np.int64)

    def work(a, b):
        out[a:b] = _sample(grid.positions(x[a:b]), seed, a)

    parallel_chunks(x.size, work, CHUNK)
    return out.reshape(shape)


def _encode_raw(x, out):
    scale, lo, hi = float(1 << contract.RAW_FRAC), -1.0, 1.0
    fixed = out.view(np.int32)

    def work(a, b):
        y = scratch("y", b - a, np.float64)
        np.clip(x[a:b], lo, hi, out=y)
        np.multiply(y, scale, out=y)
        np.add(y, 0.5, out=y)
        np.floor(y, out=y)
        np.copyto(fixed[a:b], y, casting="unsafe")

    parallel_chunks(x.size, work, CHUNK)


def encode(xv, fmt, rounding, rng, table=None):
    """Quantize a level-space feature matrix into the fields of ``fmt.encoding``.

    SINGLE: the code. PAIR: code A | code B << b. COMPACT: interval | up_A << k | up_B << (k+1),
    k = ``fmt.index_bits``. RAW: ``round(x * 2**RAW_FRAC)`` as 32-bit two's complement (x clipped
    to [-1, 1], no draws). A and B are independent draws (A's key first); with nearest
    rounding they coincide. The rounding and the draws are those of :func:`quantize` on
    ``level_values(fmt, table)`` (module docs); both samples are made in one pass.

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
    xv = np.asarray(xv)
    if xv.ndim != 2:
        raise ValueError(f"encode needs a 2-D (rows, features) array, got shape {xv.shape}")
    x = _flat_values(xv)
    out = np.empty(xv.shape, np.uint32)
    flat = out.reshape(-1)
    if fmt.encoding == Encoding.RAW:
        _encode_raw(x, flat)
        return out
    _check_rounding(rounding, rng)
    grid = _grid(level_values(fmt, table))
    stochastic = rounding == "stochastic"
    seed_a = _stream(rng) if stochastic else None
    if fmt.encoding == Encoding.SINGLE:
        def work(a, b):
            flat[a:b] = _sample(grid.positions(x[a:b]), seed_a, a)
        parallel_chunks(x.size, work, CHUNK)
        return out
    seed_b = _stream(rng) if stochastic else None
    bits, k, last = np.uint32(fmt.bits), np.uint32(fmt.index_bits), np.uint32(grid.s - 2)

    if fmt.encoding == Encoding.PAIR:
        def work(a, b):
            t = grid.positions(x[a:b])
            code_a = _sample(t, seed_a, a)
            code_b = _sample(t, seed_b, a) if stochastic else code_a.copy()
            np.left_shift(code_b, bits, out=code_b)
            np.bitwise_or(code_a, code_b, out=flat[a:b])
    else:
        def work(a, b):
            t = grid.positions(x[a:b])
            code_a = _sample(t, seed_a, a)
            code_b = _sample(t, seed_b, a) if stochastic else code_a.copy()
            i = np.right_shift(t, np.uint32(DITHER_BITS), out=t)
            np.minimum(i, last, out=i)
            np.subtract(code_a, i, out=code_a)              # up bit of A
            np.left_shift(code_a, k, out=code_a)
            np.subtract(code_b, i, out=code_b)
            np.left_shift(code_b, k + np.uint32(1), out=code_b)
            np.bitwise_or(code_a, code_b, out=code_a)
            np.bitwise_or(code_a, i, out=flat[a:b])
    parallel_chunks(x.size, work, CHUNK)
    return out


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
