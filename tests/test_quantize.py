"""Level values, rounding, the field encodings and their decoding, fixed-point labels."""

import bisect
import math
from fractions import Fraction

import numpy as np
import pytest

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode
from zipml.host import quantize as quantize_module
from zipml.host.quantize import (
    check_table,
    decode,
    encode,
    encode_labels,
    level_values,
    quantize,
    quantize_interval,
)

TABLE3 = (-255, -200, -60, -5, 0, 30, 100, 255)          # a non-uniform 3-bit table
UNIFORM = (LevelMode.UNIFORM_SIGNED, LevelMode.UNIFORM_UNSIGNED)


def some_table(bits, seed=0):
    """A random strictly increasing table of 2**bits entries within +-TABLE_MAX."""
    rng = np.random.default_rng(seed)
    points = np.arange(-contract.TABLE_MAX, contract.TABLE_MAX + 1)
    return tuple(int(t) for t in np.sort(rng.choice(points, 1 << bits, replace=False)))


def formats_with_tables():
    for bits in range(1, contract.MAX_BITS + 1):
        for mode in UNIFORM:
            yield Format(Encoding.PAIR, bits, mode), None
        if bits >= 2:
            yield Format(Encoding.PAIR, bits, LevelMode.TABLE), some_table(bits, bits)


def test_uniform_level_values():
    np.testing.assert_array_equal(level_values(Format(Encoding.PAIR, 2)),
                                  [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_array_equal(
        level_values(Format(Encoding.SINGLE, 2, LevelMode.UNIFORM_UNSIGNED)),
        [0, 0.25, 0.5, 0.75])
    for bits in range(1, contract.MAX_BITS + 1):
        for mode in UNIFORM:
            fmt = Format(Encoding.COMPACT, bits, mode)
            levels = level_values(fmt)
            assert len(levels) == fmt.n_levels and levels[-1] == fmt.top
            assert np.all(np.diff(levels) > 0)


def test_table_level_values_and_validation():
    fmt = Format(Encoding.PAIR, 3, LevelMode.TABLE)
    np.testing.assert_array_equal(level_values(fmt, TABLE3), np.array(TABLE3) / 256)
    np.testing.assert_array_equal(level_values(fmt, np.array(TABLE3, float)),
                                  np.array(TABLE3) / 256)
    bad = [(None, "needs a level table"),
           (TABLE3[:-1], "has 8 entries"),
           ((-256,) + TABLE3[1:], "entry 0 = -256 is outside"),
           (TABLE3[:3] + (-200,) + TABLE3[4:], "strictly increasing: entry 3"),
           (TABLE3[:4] + (-5,) + TABLE3[5:], "strictly increasing: entry 4"),
           ((0.5,) + TABLE3[1:], "must be integers")]
    for table, message in bad:
        with pytest.raises(ValueError, match=message):
            level_values(fmt, table)
    with pytest.raises(ValueError, match="RAW"):
        level_values(Format(Encoding.RAW))
    assert check_table(TABLE3, 3).dtype == np.int64


@pytest.mark.parametrize("fmt, table", [(Format(Encoding.SINGLE, 3), None),
                                        (Format(Encoding.SINGLE, 1), None),
                                        (Format(Encoding.SINGLE, 3, LevelMode.TABLE), TABLE3)])
def test_stochastic_rounding_is_unbiased(fmt, table):
    """The mean of many roundings converges to the value (5 standard errors)."""
    levels = level_values(fmt, table)
    rng = np.random.default_rng(1)
    values = np.concatenate([levels, (levels[:-1] + levels[1:]) / 2,
                             rng.uniform(levels[0], levels[-1], 40),
                             levels[:-1] + 1e-3 * np.diff(levels)])
    m = 20_000
    codes = quantize(np.repeat(values[:, None], m, axis=1), levels, "stochastic", rng)
    q = levels[codes]
    lo = levels[np.clip(np.searchsorted(levels, values, "right") - 1, 0, len(levels) - 2)]
    hi = levels[np.clip(np.searchsorted(levels, values, "right"), 1, len(levels) - 1)]
    # Only the two neighbouring levels are ever chosen.
    assert np.all((q == lo[:, None]) | (q == hi[:, None]))
    variance = (values - lo) * (hi - values)
    stderr = np.sqrt(np.maximum(variance, 0) / m)
    assert np.all(np.abs(q.mean(axis=1) - values) <= 5 * stderr + 1e-15)


def test_stochastic_rounding_rule_and_stream():
    """Up iff (T mod 2**24) + U >= 2**24, T = floor(t * 2**24) the fixed-point position and U
    the top 24 bits of the documented stream of one key drawn from rng: a reproducible rule."""
    levels = np.array([0.0, 1.0, 2.0])
    values = np.concatenate([[0.3, 1.75, 2.0, 0.0, 1.0, 0.5],
                             np.random.default_rng(8).uniform(0, 2, 995)]).reshape(-1, 7)
    rng = np.random.default_rng(7)
    key = np.random.default_rng(7).integers(0, 1 << 64, size=2, dtype=np.uint64)
    stream = np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(key)))
    u = stream.integers(0, 1 << 32, size=values.shape, dtype=np.uint32) >> 8
    t = np.floor(values * 2**24).astype(np.int64)          # exact: levels 1 apart from 0
    interval, up = quantize_interval(values, levels, "stochastic", rng)
    np.testing.assert_array_equal(interval, np.minimum(t >> 24, 1))
    np.testing.assert_array_equal(up, (t + u) >> 24 != np.minimum(t >> 24, 1))
    assert interval.flat[:4].tolist() == [0, 1, 1, 0] and up.flat[2] and not up.flat[3]
    after_key = np.random.default_rng(7)
    after_key.integers(0, 1 << 64, size=2, dtype=np.uint64)
    assert rng.random() == after_key.random()                # rng gave the key, nothing else


@pytest.mark.parametrize("fmt, table", list(formats_with_tables()))
def test_nearest_rounding_picks_the_nearest_level_ties_up(fmt, table):
    levels = level_values(fmt, table)
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.uniform(levels[0], levels[-1], 2000), levels,
                             (levels[:-1] + levels[1:]) / 2, [levels[0] - 1, levels[-1] + 1]])
    codes = quantize(values, levels, "nearest", None)
    clipped = np.clip(values, levels[0], levels[-1])
    distance = np.abs(clipped[:, None] - levels[None, :])
    nearest = distance == distance.min(axis=1, keepdims=True)
    expected = len(levels) - 1 - np.argmax(nearest[:, ::-1], axis=1)     # the highest tie
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.parametrize("fmt, table", list(formats_with_tables()))
def test_interval_index_is_exact_next_to_every_level(fmt, table):
    """The interval is min(searchsorted - 1, s - 2), also one ulp either side of each level."""
    levels = level_values(fmt, table)
    s = len(levels)
    rng = np.random.default_rng(3)
    values = np.concatenate([levels, np.nextafter(levels, -np.inf), np.nextafter(levels, np.inf),
                             rng.uniform(levels[0], levels[-1], 5000)])
    values = np.clip(values, levels[0], levels[-1])
    for rounding, gen in (("nearest", None), ("stochastic", rng)):
        interval, up = quantize_interval(values, levels, rounding, gen)
        expected = np.minimum(np.searchsorted(levels, values, "right") - 1, s - 2)
        np.testing.assert_array_equal(interval, expected)
    # Exactly on level j: interval min(j, s - 2), and only the top level rounds up.
    interval, up = quantize_interval(levels, levels, "stochastic", rng)
    np.testing.assert_array_equal(interval, np.minimum(np.arange(s), s - 2))
    np.testing.assert_array_equal(up, np.arange(s) == s - 1)


def test_bad_rounding_arguments():
    levels = np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="rounding must be one of"):
        quantize([0.5], levels, "floor", np.random.default_rng())
    with pytest.raises(ValueError, match="needs rng"):
        quantize([0.5], levels, "stochastic", None)
    with pytest.raises(ValueError, match="strictly increasing"):
        quantize([0.5], [1.0, 0.0], "nearest")
    with pytest.raises(ValueError, match="2-D"):
        encode(np.zeros(3), Format(), "nearest", None)


def level_space(rng, fmt, shape=(40, 13)):
    x = rng.uniform(-1, 1, shape) * fmt.top
    return x if fmt.signed else np.abs(x)


@pytest.mark.parametrize("fmt, table", list(formats_with_tables()))
def test_pair_and_compact_carry_the_same_samples(fmt, table):
    """Same seed, same (A, B); A is the first draw of rng, B the second."""
    x = level_space(np.random.default_rng(4), fmt)
    levels = level_values(fmt, table)
    fields = {}
    for enc in (Encoding.PAIR, Encoding.COMPACT):
        f = Format(enc, fmt.bits, fmt.levels)
        fields[enc] = encode(x, f, "stochastic", np.random.default_rng(11), table=table)
        assert fields[enc].dtype == np.uint32 and fields[enc].shape == x.shape
        assert int(fields[enc].max()) < 1 << f.field_bits
    pair = decode(fields[Encoding.PAIR], fmt, table)
    compact = decode(fields[Encoding.COMPACT], Format(Encoding.COMPACT, fmt.bits, fmt.levels),
                     table)
    np.testing.assert_array_equal(pair[0], compact[0])
    np.testing.assert_array_equal(pair[1], compact[1])
    rng = np.random.default_rng(11)
    code_a = quantize(x, levels, "stochastic", rng)
    code_b = quantize(x, levels, "stochastic", rng)
    scale = 1 << fmt.value_frac
    np.testing.assert_array_equal(pair[0], levels[code_a] * scale)
    np.testing.assert_array_equal(pair[1], levels[code_b] * scale)
    single = encode(x, Format(Encoding.SINGLE, fmt.bits, fmt.levels), "stochastic",
                    np.random.default_rng(11), table=table)
    np.testing.assert_array_equal(single, code_a)
    assert not np.array_equal(code_a, code_b)


def test_compact_field_layout_for_one_and_three_bits():
    x = np.array([[-1.0, 1.0, 0.0]])
    one = encode(x * Format(Encoding.COMPACT, 1).top, Format(Encoding.COMPACT, 1), "nearest",
                 None)
    np.testing.assert_array_equal(one, [[0b00, 0b11, 0b11]])        # k = 0: up_A, up_B only
    fmt = Format(Encoding.COMPACT, 3)
    assert fmt.index_bits == 3
    three = encode(x * fmt.top, fmt, "nearest", None)
    # level 0 -> interval 0, no up; level 7 -> interval 6, both up; 0.0 is the tie between
    # levels 3 and 4 -> interval 3, both up.
    np.testing.assert_array_equal(three, [[0, 6 | 0b11000, 3 | 0b11000]])


def test_samples_a_and_b_are_independent():
    """The rounding errors of A and B are uncorrelated (they would be equal if shared)."""
    fmt = Format(Encoding.PAIR, 2)
    rng = np.random.default_rng(5)
    n = 200_000
    x = rng.uniform(-fmt.top, fmt.top, (n, 1))
    va, vb = decode(encode(x, fmt, "stochastic", rng), fmt)
    scale = 1 << fmt.value_frac
    ea, eb = va[:, 0] / scale - x[:, 0], vb[:, 0] / scale - x[:, 0]
    r = np.corrcoef(ea, eb)[0, 1]
    assert abs(r) < 5 / np.sqrt(n)
    assert np.mean(va != vb) > 0.2
    na, nb = decode(encode(x, fmt, "nearest", None), fmt)
    np.testing.assert_array_equal(na, nb)


@pytest.mark.parametrize("mode", UNIFORM)
def test_decode_uniform_values(mode):
    bits = 3
    s = 1 << bits
    codes = np.arange(s, dtype=np.uint32)
    signed = mode == LevelMode.UNIFORM_SIGNED
    expected = 2 * codes.astype(int) - (s - 1) if signed else codes.astype(int)
    va, vb = decode(codes[:, None], Format(Encoding.SINGLE, bits, mode))
    np.testing.assert_array_equal(va[:, 0], expected)
    np.testing.assert_array_equal(vb, va)
    assert va.dtype == np.int64
    pair = codes | (codes[::-1] << 3)
    va, vb = decode(pair, Format(Encoding.PAIR, bits, mode))
    np.testing.assert_array_equal(va, expected)
    np.testing.assert_array_equal(vb, expected[::-1])


def test_decode_table_and_compact_values():
    fmt = Format(Encoding.COMPACT, 3, LevelMode.TABLE)
    fields = np.array([0, 0b01000, 0b10110, 0b11110], np.uint32)
    va, vb = decode(fields, fmt, TABLE3)
    np.testing.assert_array_equal(va, [TABLE3[0], TABLE3[1], TABLE3[6], TABLE3[7]])
    np.testing.assert_array_equal(vb, [TABLE3[0], TABLE3[0], TABLE3[7], TABLE3[7]])
    # Index 7 (past the last interval, 6) with both up bits set wraps modulo s: 8 -> 0; index
    # 7 with up bits clear is code 7.
    va, vb = decode(np.array([0b11111, 0b00111], np.uint32), fmt, TABLE3)
    np.testing.assert_array_equal(va, [TABLE3[0], TABLE3[7]])
    np.testing.assert_array_equal(vb, [TABLE3[0], TABLE3[7]])
    with pytest.raises(ValueError, match="5-bit"):
        decode(np.array([1 << 5], np.uint32), fmt, TABLE3)
    with pytest.raises(ValueError, match="needs a level table"):
        decode(fields, fmt)


def test_raw_encoding_is_exact_fixed_point_and_draws_nothing():
    fmt = Format(Encoding.RAW)
    half = 2.0 ** -(contract.RAW_FRAC + 1)
    x = np.array([[-1.0, 1.0, 0.5, half, -half, 3 * half, 2.0, -7.0]])
    rng = np.random.default_rng(6)
    fields = encode(x, fmt, "stochastic", rng)
    assert fields.dtype == np.uint32
    one = 1 << contract.RAW_FRAC
    va, vb = decode(fields, fmt)
    np.testing.assert_array_equal(va, [[-one, one, one // 2, 1, 0, 2, one, -one]])
    np.testing.assert_array_equal(vb, va)
    assert rng.random() == np.random.default_rng(6).random()


def test_encode_labels_rounds_half_up_and_saturates():
    lsb = 2.0 ** -contract.LABEL_FRAC
    y = [0.0, 1.0, -1.0, lsb / 2, -lsb / 2, -1.5 * lsb, 0.3, 200.0, -200.0]
    lo, hi = contract.sat_limits(contract.LABEL_BITS)
    one = 1 << contract.LABEL_FRAC
    labels = encode_labels(y)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, [0, one, -one, 1, 0, -1, round(0.3 * one), hi, lo])
    with pytest.raises(ValueError, match="label 1 is not finite"):
        encode_labels([0.0, np.nan])


def exact_position(x, levels):
    """T = i * 2**24 + floor(p * 2**24) in rational arithmetic (the module docs' definition)."""
    s = len(levels)
    x = min(max(x, levels[0]), levels[-1])
    i = min(bisect.bisect_right(levels, x) - 1, s - 2)
    p = (Fraction(x) - Fraction(levels[i])) / (Fraction(levels[i + 1]) - Fraction(levels[i]))
    return i * 2**24 + math.floor(p * 2**24)


@pytest.mark.parametrize("fmt, table", list(formats_with_tables()))
def test_fixed_point_positions_are_exact_and_the_bias_is_below_2_to_the_minus_24(fmt, table):
    levels = level_values(fmt, table)
    width = np.diff(levels)
    rng = np.random.default_rng(12)
    k = rng.integers(0, len(levels) - 1, 300)
    on_grid = levels[k] + width[k] * rng.integers(0, 2**24, 300) / 2**24    # p a multiple of 2**-24
    values = np.concatenate([
        levels, np.nextafter(levels, -np.inf), np.nextafter(levels, np.inf),
        (levels[:-1] + levels[1:]) / 2, on_grid, np.nextafter(on_grid, -np.inf),
        rng.uniform(levels[0], levels[-1], 300), [5e-324, -5e-324, 1e-300, -1e-300, 0.0, -0.0],
        [levels[0] - 1, levels[-1] + 1, -np.inf, np.inf]])
    t = quantize_module._grid(levels).positions(values).astype(np.int64)
    exact = [exact_position(float(v), levels.tolist()) for v in values]
    np.testing.assert_array_equal(t, exact)
    # E[Q(x)] for a uniform U: l_i + (T mod 2**24) / 2**24 * (l_{i+1} - l_i), within
    # (x - 2**-24 (l_{i+1} - l_i), x], and x itself when p is a multiple of 2**-24.
    exact_grid = set(levels.tolist()) | set(on_grid.tolist())
    for v, pos in zip(values[:len(values) - 4], exact):
        i = min(pos >> 24, len(levels) - 2)
        lo, hi = Fraction(float(levels[i])), Fraction(float(levels[i + 1]))
        mean = lo + Fraction(pos - i * 2**24, 2**24) * (hi - lo)
        x = min(max(Fraction(float(v)), Fraction(float(levels[0]))), Fraction(float(levels[-1])))
        assert x - (hi - lo) / 2**24 < mean <= x
        assert (mean == x) or float(v) not in exact_grid


def test_positions_of_other_levels_are_within_one_unit():
    """Levels off a small dyadic grid (such as optimal levels): float64, one unit at most."""
    levels = np.array([-0.9, -0.31, 0.1, 0.2 / 3, 0.77])
    levels.sort()
    assert quantize_module._grid(levels).kind == "float"
    values = np.concatenate([np.random.default_rng(13).uniform(-1, 1, 2000), levels,
                             np.nextafter(levels, -np.inf), np.nextafter(levels, np.inf)])
    t = quantize_module._grid(levels).positions(values).astype(np.int64)
    exact = np.array([exact_position(float(v), levels.tolist()) for v in values])
    assert np.abs(t - exact).max() <= 1
    np.testing.assert_array_equal(t >> 24, exact >> 24)              # the interval is exact


@pytest.mark.parametrize("fmt, table", [(Format(Encoding.PAIR, 2), None),
                                        (Format(Encoding.COMPACT, 3, LevelMode.TABLE), TABLE3),
                                        (Format(Encoding.PAIR, 8, LevelMode.UNIFORM_UNSIGNED),
                                         None)])
def test_both_encoded_samples_are_unbiased(fmt, table):
    """encode's samples A and B each average to the value (5 standard errors), fields of
    many copies of a row of values."""
    levels = level_values(fmt, table)
    rng = np.random.default_rng(14)
    values = np.concatenate([levels, (levels[:-1] + levels[1:]) / 2,
                             rng.uniform(levels[0], levels[-1], 40)])[:120]
    m = 20_000
    va, vb = decode(encode(np.tile(values, (m, 1)), fmt, "stochastic", rng, table=table), fmt,
                    table)
    lo = levels[np.clip(np.searchsorted(levels, values, "right") - 1, 0, len(levels) - 2)]
    hi = levels[np.clip(np.searchsorted(levels, values, "right"), 1, len(levels) - 1)]
    stderr = np.sqrt(np.maximum((values - lo) * (hi - values), 0) / m)
    scale = 1 << fmt.value_frac
    for v in (va, vb):
        assert np.all(np.abs(v.mean(axis=0) / scale - values) <= 5 * stderr + 1e-15)


def test_rounding_probability_resolution_is_2_to_the_minus_24():
    """Up with probability floor(p * 2**24) / 2**24: never when p < 2**-24 (the bias of the
    resolution), p when p is a multiple of 2**-24."""
    levels = np.array([0.0, 1.0])
    rng = np.random.default_rng(15)
    n = 1 << 18
    assert not quantize(np.full(n, 2.0**-25), levels, "stochastic", rng).any()
    for p in (0.5, 0.25 + 2.0**-24, 1 - 2.0**-10):
        up = quantize(np.full(n, p), levels, "stochastic", rng)
        assert abs(up.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("chunk, threads", [(5, "1"), (64, "3"), (1000, "2"), (1 << 16, "1")])
def test_results_do_not_depend_on_chunks_or_threads(monkeypatch, chunk, threads):
    rng = np.random.default_rng(16)
    x = rng.uniform(-1, 1, (97, 13))
    cases = [(Format(e, b, mode), tab) for e in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
             for b, mode, tab in ((1, LevelMode.UNIFORM_SIGNED, None),
                                  (3, LevelMode.TABLE, TABLE3),
                                  (8, LevelMode.UNIFORM_UNSIGNED, None))]
    cases.append((Format(Encoding.RAW), None))

    def everything():
        out = [encode(np.abs(x) * f.top if not f.signed else x * f.top, f, "stochastic",
                      np.random.default_rng(17), table=t) for f, t in cases]
        out.append(quantize(x, level_values(Format(Encoding.SINGLE, 2)), "stochastic",
                            np.random.default_rng(18)))
        out.extend(quantize_interval(x, np.array([-1.0, -0.3, 0.1, 1.0]), "stochastic",
                                     np.random.default_rng(19)))
        return out

    monkeypatch.delenv("ZIPML_HOST_THREADS", raising=False)
    expected = everything()
    monkeypatch.setattr(quantize_module, "CHUNK", chunk)
    monkeypatch.setenv("ZIPML_HOST_THREADS", threads)
    for a, b in zip(everything(), expected):
        np.testing.assert_array_equal(a, b)
