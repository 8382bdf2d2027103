"""Variance-optimal quantization levels (docs: ZIPML.md, "Variance-optimal levels").

Stochastic rounding of a value v in [l_j, l_{j+1}] has variance (l_{j+1} - v)(v - l_j); a data
set's total is the sum over its values. :func:`optimal_levels` chooses s levels, the first and
last at the ends of the data's range, that minimise this total: a dynamic programme over
candidate points, T(k, m) = min_{j<m} T(k-1, j) + V(j, m), where the interval cost V(j, m) is
O(1) from prefix sums of count, sum and sum of squares. :func:`optimal_table` turns the result
into the integer level table a ``LevelMode.TABLE`` format loads.

Why the default candidates (the data values) lose nothing: with its neighbours fixed, the total
is piecewise linear in one level's position, with breakpoints at the data values, so some
optimum has every level on a data value or on an end of the range.
"""

import itertools

import numpy as np

from zipml import contract
from zipml.contract import Encoding, LevelMode

__all__ = ["MAX_EXACT", "METHODS", "rounding_variance", "optimal_levels", "brute_force_levels",
           "optimal_table"]

#: ``method="auto"`` runs the exact programme up to this many candidates; ``"approx"`` runs it
#: on a grid of at most this many.
MAX_EXACT = 512

METHODS = ("auto", "exact", "approx")

_MAX_CELLS = 1 << 22    # cost-matrix entries held at once (float64: 32 MiB)
_MAX_SWEEPS = 100       # refinement sweeps of the approximate method
_SNAP = 1e-9            # table grid units: closer than this to a grid point counts as on it


# --- checks ------------------------------------------------------------------------------------

def _as_values(values):
    """Finite values as a flat float64 array (at least one)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("need at least one value")
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite (no NaN or inf)")
    return v


def _as_increasing(points, what):
    """A non-empty, finite, strictly increasing 1-D float64 array, or ValueError."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or not np.all(np.isfinite(p)):
        raise ValueError(f"{what} must be a non-empty 1-D array of finite numbers")
    if np.any(np.diff(p) <= 0):
        raise ValueError(f"{what} must be strictly increasing (sorted, no repeats)")
    return p


def _candidates(sorted_values, candidates):
    """Candidate level positions covering [min, max]: the unique values by default."""
    if candidates is None:
        return np.unique(sorted_values)
    c = _as_increasing(candidates, "candidates")
    lo, hi = sorted_values[0], sorted_values[-1]
    return np.concatenate([[lo] if c[0] > lo else [], c, [hi] if c[-1] < hi else []])


# --- the objective -----------------------------------------------------------------------------

def rounding_variance(values, levels):
    """Total stochastic-rounding variance sum_i (l_{j+1} - v_i)(v_i - l_j) of ``values``.

    Parameters
    ----------
    values : float array, any shape
        Must lie within [levels[0], levels[-1]].
    levels : float array (s,)
        Strictly increasing.
    """
    v = _as_values(values)
    lv = _as_increasing(levels, "levels")
    if v.min() < lv[0] or v.max() > lv[-1]:
        raise ValueError(f"values span [{v.min()}, {v.max()}], outside the levels' range "
                         f"[{lv[0]}, {lv[-1]}]")
    if lv.size == 1:
        return 0.0
    j = np.clip(np.searchsorted(lv, v, side="right") - 1, 0, lv.size - 2)
    return float(np.sum((lv[j + 1] - v) * (v - lv[j])))


class _IntervalCost:
    """V(j, m): total variance of the values strictly between candidates j < m (inf if j >= m).

    Values on a candidate contribute 0 to every interval, so they are left out of all of them.
    Sums are taken about the middle of the candidate range to limit cancellation.
    """

    def __init__(self, sorted_values, candidates):
        self.size = candidates.size
        centre = 0.5 * (candidates[0] + candidates[-1])
        self.c = candidates - centre
        v = sorted_values - centre
        s1 = np.concatenate([[0.0], np.cumsum(v)])
        s2 = np.concatenate([[0.0], np.cumsum(v * v)])
        below = np.searchsorted(sorted_values, candidates, side="left")   # values < c
        upto = np.searchsorted(sorted_values, candidates, side="right")   # values <= c
        self.n_lt, self.s1_lt, self.s2_lt = below.astype(np.float64), s1[below], s2[below]
        self.n_le, self.s1_le, self.s2_le = upto.astype(np.float64), s1[upto], s2[upto]

    def __call__(self, j, m):
        a, b = self.c[j], self.c[m]
        n = self.n_lt[m] - self.n_le[j]
        s1 = self.s1_lt[m] - self.s1_le[j]
        s2 = self.s2_lt[m] - self.s2_le[j]
        cost = (a + b) * s1 - s2 - a * b * n     # sum (b - v)(v - a)
        return np.where(j < m, np.maximum(cost, 0.0), np.inf)


# --- search ------------------------------------------------------------------------------------

def _dp(cost, s):
    """Indices of the s candidates (first and last included) of least total variance.

    One pass per level count k, vectorised over all (j, m) pairs; the cost matrix is computed
    once when it fits in _MAX_CELLS entries, else per block of columns m.
    """
    size = cost.size
    idx = np.arange(size)
    full = cost(idx[:, None], idx[None, :]) if size * size <= _MAX_CELLS else None
    step = size if full is not None else max(1, _MAX_CELLS // size)
    t = cost(np.array([0]), idx)             # T(1, m): levels c_0 and c_m only
    back = np.zeros((s, size), dtype=np.intp)
    for k in range(2, s):
        new = np.full(size, np.inf)
        for lo in range(1, size, step):
            m = idx[lo:lo + step]
            j = idx[:m[-1]]
            v = full[:m[-1], m] if full is not None else cost(j[:, None], m[None, :])
            total = t[j, None] + v
            best = np.argmin(total, axis=0)
            back[k, m] = best
            new[m] = total[best, np.arange(m.size)]
        t = new
    chosen = [size - 1]
    for k in range(s - 1, 1, -1):
        chosen.append(back[k, chosen[-1]])
    chosen.append(0)
    return np.array(chosen[::-1], dtype=np.intp)


def _refine(cost, chosen):
    """Move one interior level at a time to its best candidate between its neighbours, until
    no move lowers the total (each move is vectorised over the candidates)."""
    chosen = chosen.copy()
    for _ in range(_MAX_SWEEPS):
        moved = False
        for i in range(1, chosen.size - 1):
            a, b = chosen[i - 1], chosen[i + 1]
            x = np.arange(a + 1, b)
            total = cost(np.array([a]), x) + cost(x, np.array([b]))
            best = int(np.argmin(total))
            if total[best] < total[chosen[i] - a - 1]:
                chosen[i] = x[best]
                moved = True
        if not moved:
            break
    return chosen


def _approx_grid(sorted_values, c, max_exact):
    """Indices of at most ``max_exact`` candidates: the ends, the candidates nearest to evenly
    spaced data quantiles, topped up with evenly spaced candidates when quantiles coincide."""
    size = c.size
    n_q = max_exact - 2 - (max_exact - 2) // 4
    q = np.quantile(sorted_values, np.linspace(0, 1, n_q))
    q = np.concatenate([q, np.linspace(sorted_values[0], sorted_values[-1],
                                       max_exact - 2 - n_q)])
    pos = np.clip(np.searchsorted(c, q), 1, size - 1)
    near = np.where(q - c[pos - 1] <= c[pos] - q, pos - 1, pos)
    grid = np.unique(np.concatenate([[0, size - 1], near]))
    room = max_exact - grid.size
    spare = np.setdiff1d(np.arange(size), grid, assume_unique=True)
    if room > 0 and spare.size:
        pick = np.unique(np.linspace(0, spare.size - 1, min(room, spare.size)).round())
        grid = np.union1d(grid, spare[pick.astype(np.intp)])
    return grid


def optimal_levels(values, s, candidates=None, method="auto", max_exact=MAX_EXACT, refine=True):
    """The s levels of least total stochastic-rounding variance of ``values``.

    Parameters
    ----------
    values : float array, any shape
    s : int
        Number of levels, at least 2.
    candidates : float array, optional
        Allowed level positions, strictly increasing. Default: the unique values. min(values)
        and max(values) are added when the candidates do not reach them. The first and last
        candidate are always levels.
    method : "auto", "exact" or "approx"
        "exact": the dynamic programme on all M candidates, O(s M^2). "approx": the programme on
        at most ``max_exact`` candidates nearest to data quantiles, then (``refine``) each level
        moved to its best candidate between its neighbours until none moves. "auto": "exact"
        when M <= ``max_exact``, else "approx".
    max_exact : int
    refine : bool
        Approximate method only.

    Returns
    -------
    float64 array (min(s, M),)
        Strictly increasing levels, all of them candidates. When s >= M, every candidate (fewer
        than s levels, each value's variance is then 0); no padding, since extra levels outside
        the candidates would be unused.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if s < 2:
        raise ValueError(f"need at least 2 levels (the ends of the range), not {s}")
    v = np.sort(_as_values(values))
    c = _candidates(v, candidates)
    if s >= c.size:
        return c.copy()
    cost = _IntervalCost(v, c)
    if method == "exact" or (method == "auto" and c.size <= max_exact):
        return c[_dp(cost, s)]
    if max_exact < max(s, 3):
        raise ValueError(f"max_exact ({max_exact}) must be at least the number of levels ({s})")
    grid = _approx_grid(v, c, max_exact)
    chosen = grid[_dp(_IntervalCost(v, c[grid]), s)]
    if refine:
        chosen = _refine(cost, chosen)
    return c[chosen]


def brute_force_levels(values, s, candidates=None):
    """Exhaustive search over every choice of s candidates (tests only: small inputs).

    Same conventions as :func:`optimal_levels`; ties go to the lexicographically first choice.
    """
    if s < 2:
        raise ValueError(f"need at least 2 levels (the ends of the range), not {s}")
    v = _as_values(values)
    c = _candidates(np.sort(v), candidates)
    if s >= c.size:
        return c.copy()
    best, best_var = None, np.inf
    for inner in itertools.combinations(range(1, c.size - 1), s - 2):
        levels = c[[0, *inner, c.size - 1]]
        var = rounding_variance(v, levels)
        if var < best_var:
            best, best_var = levels, var
    return best


# --- the device's level table ------------------------------------------------------------------

def optimal_table(values, fmt):
    """The variance-optimal level table of a ``LevelMode.TABLE`` format for level-space values.

    Entries are integers in units of 2**-TABLE_FRAC within [-TABLE_MAX, TABLE_MAX] (signed
    formats) or [0, TABLE_MAX]; there are 2**fmt.bits of them, strictly increasing, the first
    the grid point at or below min(values), the last the one at or above max(values), chosen by
    the exact programme over every grid point in between.

    Parameters
    ----------
    values : float array, any shape
        Level-space values (scaled features times ``fmt.top``). Values within 1e-9 grid units of
        a grid point count as on it.
    fmt : contract.Format
        ``levels == LevelMode.TABLE``, not RAW.

    Returns
    -------
    tuple of int
    """
    if fmt.levels != LevelMode.TABLE or fmt.encoding == Encoding.RAW:
        raise ValueError(f"optimal_table needs a LevelMode.TABLE format, not {fmt}")
    v = _as_values(values) * float(1 << contract.TABLE_FRAC)
    lo, hi = int(np.floor(v.min() + _SNAP)), int(np.ceil(v.max() - _SNAP))
    floor = -contract.TABLE_MAX if fmt.signed else 0
    if lo < floor or hi > contract.TABLE_MAX:
        raise ValueError(f"values span grid points [{lo}, {hi}] (units 2**-{contract.TABLE_FRAC}),"
                         f" outside the table's range [{floor}, {contract.TABLE_MAX}]")
    if hi - lo + 1 < fmt.n_levels:
        raise ValueError(f"values span grid points [{lo}, {hi}]: {hi - lo + 1} points, fewer "
                         f"than the {fmt.n_levels} levels of a {fmt.bits}-bit table")
    grid = np.arange(lo, hi + 1, dtype=np.float64)
    levels = optimal_levels(np.clip(v, lo, hi), fmt.n_levels, candidates=grid, method="exact")
    return tuple(int(x) for x in np.rint(levels))
