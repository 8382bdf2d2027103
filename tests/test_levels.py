"""Variance-optimal levels: the programme against brute force, uniform levels and Monte Carlo."""

import itertools

import numpy as np
import pytest

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode
from zipml.host import levels
from zipml.host.levels import (
    brute_force_levels,
    optimal_levels,
    optimal_table,
    rounding_variance,
)
from zipml.host.quantize import check_table

DATASETS = ("uniform", "gaussian", "exponential", "bimodal")


def _data(name, n, seed=0):
    rng = np.random.default_rng(seed)
    if name == "uniform":
        return rng.uniform(-1.0, 1.0, n)
    if name == "gaussian":
        return rng.normal(0.0, 1.0, n)
    if name == "exponential":
        return rng.exponential(1.0, n)
    half = n // 2
    return np.concatenate([rng.normal(-2.0, 0.3, half), rng.normal(1.5, 0.6, n - half)])


def _to_level_space(x, bits):
    """Scale to [-1, 1] by the largest magnitude, then onto the table's top level."""
    return x / np.abs(x).max() * Format(Encoding.PAIR, bits, LevelMode.TABLE).top


def _all_variances(values, s, candidates):
    """Total variance of every choice of s candidates keeping both ends, sorted."""
    c = np.asarray(candidates)
    return sorted(rounding_variance(values, c[[0, *inner, c.size - 1]])
                  for inner in itertools.combinations(range(1, c.size - 1), s - 2))


# --- rounding_variance -------------------------------------------------------------------------

def test_rounding_variance_by_hand():
    # (1 - .25) .25 + .5 .5 + 0 (on a level) + (2 - 1.5)(1.5 - 1)
    assert rounding_variance([0.25, 0.5, 1.0, 1.5], [0.0, 1.0, 2.0]) == pytest.approx(0.6875)
    assert rounding_variance([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == 0.0


def test_rounding_variance_rejects_uncovered_values():
    with pytest.raises(ValueError, match="outside"):
        rounding_variance([0.5, 2.5], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="increasing"):
        rounding_variance([0.5], [0.0, 1.0, 1.0])


def test_rounding_variance_matches_monte_carlo():
    rng = np.random.default_rng(1)
    v = rng.normal(0.0, 0.4, 300).clip(-1, 1)
    levels = np.array([-1.0, -0.3, -0.05, 0.1, 0.6, 1.0])
    j = np.clip(np.searchsorted(levels, v, side="right") - 1, 0, levels.size - 2)
    lo, hi = levels[j], levels[j + 1]
    p = (v - lo) / (hi - lo)
    trials = 4000
    q = np.where(rng.random((trials, v.size)) < p, hi, lo)
    estimate = np.mean(np.sum((q - v) ** 2, axis=1))
    # Each trial's total squared error has variance sum_i Var((q_i - v_i)^2), known exactly.
    e_hi, e_lo = (hi - v) ** 2, (v - lo) ** 2
    per_trial = np.sum(p * (1 - p) * (e_hi - e_lo) ** 2)
    tol = 5 * np.sqrt(per_trial / trials)
    assert abs(estimate - rounding_variance(v, levels)) < tol
    assert tol < 0.05 * rounding_variance(v, levels)   # the check has teeth


# --- optimal_levels against brute force --------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_programme_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_cand, s = int(rng.integers(8, 13)), int(rng.integers(2, 6))
    if seed % 3 == 0:        # integer data: many values exactly on candidates
        v = rng.integers(0, 10, 40).astype(float)
        cand = None
    elif seed % 3 == 1:      # continuous data, candidates = the data values
        v = rng.exponential(1.0, n_cand)
        cand = None
    else:                    # many values, few candidates (some outside the data's range)
        v = rng.normal(0.0, 1.0, 200)
        cand = np.sort(rng.uniform(v.min() - 0.5, v.max() + 0.5, n_cand))
    c = np.unique(v) if cand is None else cand
    if s >= c.size:
        s = c.size - 1
    dp = optimal_levels(v, s, candidates=cand, method="exact")
    bf = brute_force_levels(v, s, candidates=cand)
    assert dp.dtype == np.float64 and dp.size == s
    assert rounding_variance(v, dp) == pytest.approx(rounding_variance(v, bf), rel=1e-9, abs=1e-12)
    full = np.concatenate([[v.min()] if c[0] > v.min() else [], c,
                           [v.max()] if c[-1] < v.max() else []])
    best = _all_variances(v, s, full)
    if len(best) == 1 or best[1] > best[0] * (1 + 1e-9):
        np.testing.assert_array_equal(dp, bf)


def test_levels_span_the_data():
    v = _data("gaussian", 1000, seed=2)
    lv = optimal_levels(v, 8)
    assert lv.dtype == np.float64 and lv.size == 8
    assert lv[0] == v.min() and lv[-1] == v.max()
    assert np.all(np.diff(lv) > 0)
    assert np.all(np.isin(lv, v))


def test_few_candidates_returns_them_all():
    v = [0.0, 0.5, 0.5, 1.0]
    np.testing.assert_array_equal(optimal_levels(v, 3), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(optimal_levels(v, 8), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(optimal_levels([2.0, 2.0], 4), [2.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        optimal_levels([0.0, 1.0], 1)
    with pytest.raises(ValueError, match="method"):
        optimal_levels([0.0, 1.0], 2, method="fast")
    with pytest.raises(ValueError, match="increasing"):
        optimal_levels([0.0, 1.0], 2, candidates=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ValueError, match="finite"):
        optimal_levels([0.0, np.nan], 2)


# --- against uniform levels; approximate against exact -----------------------------------------

@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("s", [3, 4, 8, 16])
def test_optimal_never_worse_than_uniform(name, s):
    v = _data(name, 3000, seed=s)
    uniform = np.linspace(v.min(), v.max(), s)
    optimal = optimal_levels(v, s)
    assert rounding_variance(v, optimal) <= rounding_variance(v, uniform)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("s,max_exact", [(4, 64), (8, 64), (16, 128), (16, 512), (32, 512)])
def test_approx_close_to_exact(name, s, max_exact):
    v = _data(name, 2000, seed=s + max_exact)
    exact = rounding_variance(v, optimal_levels(v, s, method="exact"))
    approx = rounding_variance(v, optimal_levels(v, s, method="approx", max_exact=max_exact))
    assert exact <= approx * (1 + 1e-12)
    assert approx <= exact * 1.02


def test_auto_is_exact_when_few_candidates():
    v = _data("bimodal", 400, seed=5)
    np.testing.assert_array_equal(optimal_levels(v, 8), optimal_levels(v, 8, method="exact"))


def test_blocked_programme_equals_full(monkeypatch):
    v = _data("exponential", 300, seed=8)
    full = optimal_levels(v, 6, method="exact")
    monkeypatch.setattr(levels, "_MAX_CELLS", 1000)     # column blocks of 3
    np.testing.assert_array_equal(optimal_levels(v, 6, method="exact"), full)


def test_approx_on_a_given_grid():
    v = _data("gaussian", 5000, seed=6)
    grid = np.linspace(v.min(), v.max(), 1001)
    exact = optimal_levels(v, 8, candidates=grid, method="exact")
    approx = optimal_levels(v, 8, candidates=grid, method="approx", max_exact=100)
    assert np.all(np.isin(approx, grid))
    assert rounding_variance(v, approx) <= rounding_variance(v, exact) * 1.02


# --- the device's level table ------------------------------------------------------------------

@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("bits", range(2, contract.MAX_BITS + 1))
def test_optimal_table_is_a_valid_table(name, bits):
    fmt = Format(Encoding.PAIR, bits, LevelMode.TABLE)
    v = _to_level_space(_data(name, 5000, seed=bits), bits)
    table = optimal_table(v, fmt)
    assert isinstance(table, tuple) and all(type(t) is int for t in table)
    assert len(table) == fmt.n_levels
    assert all(b > a for a, b in zip(table, table[1:]))
    assert -contract.TABLE_MAX <= table[0] and table[-1] <= contract.TABLE_MAX
    scale = 1 << contract.TABLE_FRAC
    assert table[0] == np.floor(v.min() * scale) and table[-1] == np.ceil(v.max() * scale)
    check_table(table, bits)
    uniform = np.round(np.linspace(table[0], table[-1], fmt.n_levels))
    if np.all(np.diff(uniform) > 0):
        assert rounding_variance(v * scale, table) <= rounding_variance(v * scale, uniform)


def test_optimal_table_equals_brute_force_on_a_small_range():
    fmt = Format(Encoding.PAIR, 2, LevelMode.TABLE)
    scale = 1 << contract.TABLE_FRAC
    v = np.random.default_rng(7).exponential(2.0, 500).clip(0, 9.5) / scale + 3 / scale
    table = optimal_table(v, fmt)
    assert table[0] == 3 and table[-1] == 13
    grid = np.arange(3, 14, dtype=float)
    best = brute_force_levels(v * scale, 4, candidates=grid)
    assert rounding_variance(v * scale, table) == pytest.approx(rounding_variance(v * scale, best))


def test_optimal_table_keeps_values_on_grid_points():
    fmt = Format(Encoding.PAIR, 3, LevelMode.TABLE)
    top = fmt.top
    table = optimal_table(np.array([-1.0, -0.25, 0.0, 0.3, 1.0]) * top, fmt)
    assert table[0] == -contract.TABLE_MAX and table[-1] == contract.TABLE_MAX


def test_optimal_table_errors():
    table_fmt = Format(Encoding.PAIR, 4, LevelMode.TABLE)
    with pytest.raises(ValueError, match="fewer than the 16 levels"):
        optimal_table(np.linspace(0.0, 10 / 256, 50), table_fmt)
    with pytest.raises(ValueError, match="outside the table's range"):
        optimal_table([-0.5, 1.0], table_fmt)
    with pytest.raises(ValueError, match="TABLE"):
        optimal_table([-0.5, 0.5], Format(Encoding.PAIR, 4))
