"""The float64 reference trainer: SGD on quantized samples, every scheme of the ZipML paper.

Pure numpy, float64. It works on data in *level space*: features scaled to [-1, 1] (or [0, 1])
with a bias column, then multiplied by the format's top level (``contract.Format(...).top``,
docs/NUMERICS.md section 1) so that a scaled 1.0 lands exactly on the largest level. The caller
does that multiplication, as the host pipeline does before packing; :func:`train_reference`
refuses data outside the levels rather than clipping it silently (clipping would bias the
samples). Regression labels are in [-1, 1], classification labels in {-1, +1}.

Losses (``a`` a row, ``b`` its label, ``z = a.x``), averaged over the K rows:

- ``"squared"``: 1/2 (z - b)**2, gradient scalar z - b;
- ``"logistic"``: log(1 + exp(-b z)), gradient scalar -b sigmoid(-b z);
- ``"hinge"``: max(0, 1 - b z), (sub)gradient scalar -b if b z < 1 else 0.

The per-row update is ``w -= lr * g(A.x) * B``: the gradient scalar of the dot product with
sample A, times sample B. Schemes differ in what A and B are:

- ``"float"``: A = B = a (full precision);
- ``"nearest"``: A = B = a rounded to the nearest level (deterministic; the naive baseline);
- ``"naive"``: A = B = Q(a), one stochastic quantization per row per epoch. For least squares
  E[Q(a) Q(a)^T] = a a^T + D with D = diag(Var Q(a_i)), so the expected gradient is
  grad + D x: a data-dependent ridge term (see :func:`naive_least_squares_limit`);
- ``"double"``: A = Q_A(a), B = Q_B(a), two independent quantizations: unbiased for least
  squares, E[Q_B(a) (Q_A(a).x - b)] = a (a.x - b);
- ``"double_symmetric"``: the average of both orderings, (Q_B g(Q_A.x) + Q_A g(Q_B.x)) / 2;
- ``"double_optimal"``: ``"double"`` on variance-optimal levels, computed once from all feature
  values of X (s = 2**bits levels, first = min, last = max);
- ``"chebyshev"`` (logistic only): see :func:`chebyshev_sigmoid`; d + 1 independent samples;
- ``"refetch"`` (hinge only): A = Q_A(a), B = Q_B(a), but a row whose quantized margin
  b Q_A(a).x lies within ``band`` of the hinge point 1 is refetched at full precision (its
  decision and update use a). See :func:`train_reference` for the bias bound.

Stochastic samples are fresh every epoch, drawn from ``numpy.random.default_rng(seed)`` in a fixed
order: per epoch sample A of all rows, then sample B (then the further samples of
``"chebyshev"``), each as one ``quantize`` call on the whole matrix.
"""

import numpy as np

from zipml import contract
from zipml.host.levels import optimal_levels
from zipml.host.quantize import quantize

__all__ = [
    "LOSSES", "SCHEMES", "uniform_levels", "loss_value", "gradient_scalar", "chebyshev_sigmoid",
    "train_reference", "rounding_variance", "least_squares_gradient_draws",
    "least_squares_gradient_bias", "naive_least_squares_limit",
]

LOSSES = ("squared", "logistic", "hinge")
SCHEMES = ("float", "nearest", "naive", "double", "double_symmetric", "double_optimal",
           "chebyshev", "refetch")

_STOCHASTIC = ("naive", "double", "double_symmetric", "double_optimal", "chebyshev", "refetch")


def _quantize(values, levels, rounding, rng):
    return np.asarray(levels)[quantize(values, levels, rounding, rng)]


def _optimal_levels(values, s):
    return np.asarray(optimal_levels(values, s), dtype=np.float64)


def uniform_levels(bits, signed=True):
    """The contract's uniform grid of 2**bits levels as floats: (2k - (s-1)) / 2**bits or
    k / 2**bits."""
    mode = contract.LevelMode.UNIFORM_SIGNED if signed else contract.LevelMode.UNIFORM_UNSIGNED
    return np.array(contract.uniform_level_ints(bits, mode), dtype=np.float64) / (1 << bits)


def gradient_scalar(z, y, loss):
    """The loss's gradient with respect to the dot product z, per row."""
    if loss == "squared":
        return z - y
    if loss == "logistic":
        return -y * 0.5 * (1.0 - np.tanh(0.5 * y * z))  # -y sigmoid(-y z), overflow-free
    if loss == "hinge":
        return np.where(y * z < 1.0, -y, 0.0)
    raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")


def loss_value(X, y, w, loss):
    """Mean training loss of model ``w`` on the (full-precision) data."""
    z = np.asarray(X, dtype=np.float64) @ np.asarray(w, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if loss == "squared":
        return float(0.5 * np.mean((z - y) ** 2))
    if loss == "logistic":
        return float(np.mean(np.logaddexp(0.0, -y * z)))
    if loss == "hinge":
        return float(np.mean(np.maximum(0.0, 1.0 - y * z)))
    raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")


def chebyshev_sigmoid(degree=3, radius=4.0):
    """Power-series coefficients c of the Chebyshev interpolant p(m) = sum_j c_j m**j of
    sigmoid(-m) on [-radius, radius], and its maximum error there.

    The logistic gradient is -b sigmoid(-m) a with margin m = b a.x. The ``"chebyshev"`` scheme
    replaces sigmoid(-m) by p(m) and estimates a p(m) without bias from d + 1 independent
    quantizations: Q_0(a) sum_j c_j b**j prod_{i=1..j} Q_i(a).x (the product of independent
    unbiased estimates is unbiased). What remains is the bias of the polynomial itself:
    ``|E[g] - grad| <= max_error * max_k ||a_k||`` as long as every margin lies in
    [-radius, radius]. sigmoid is analytic except for poles at +-i pi, so the error falls like
    rho**-degree with rho = pi/radius + sqrt(1 + (pi/radius)**2); outside the interval p grows
    like m**degree and the bound does not hold.
    """
    def f(m):
        return 0.5 * (1.0 - np.tanh(0.5 * m))

    cheb = np.polynomial.Chebyshev.interpolate(f, degree, domain=[-radius, radius])
    coef = cheb.convert(kind=np.polynomial.Polynomial).coef
    coef = np.pad(coef, (0, degree + 1 - len(coef)))
    m = np.linspace(-radius, radius, 4001)
    err = float(np.max(np.abs(np.polynomial.polynomial.polyval(m, coef) - f(m))))
    return coef, err


def _check_data(X, y, loss):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (K, n) and y (K,), not {X.shape} and {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    if loss != "squared" and not np.all(np.abs(y) == 1.0):
        raise ValueError(f"{loss} loss needs labels in {{-1, +1}}")
    return X, y


def _resolve_levels(X, scheme, bits, levels):
    """The level array a quantized scheme rounds onto (None for "float")."""
    if scheme == "float":
        return None
    if not 1 <= bits <= contract.MAX_BITS:
        raise ValueError(f"bits must be between 1 and {contract.MAX_BITS}, not {bits}")
    if levels is None:
        if scheme == "double_optimal":
            levels = _optimal_levels(X.ravel(), 1 << bits)
        else:
            levels = uniform_levels(bits, signed=bool(X.min() < 0))
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or len(levels) < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("levels must be a strictly increasing array of at least 2 values")
    tol = 1e-12
    if X.min() < levels[0] - tol or X.max() > levels[-1] + tol:
        raise ValueError(
            f"features span [{X.min():g}, {X.max():g}] but the levels span "
            f"[{levels[0]:g}, {levels[-1]:g}]: multiply the scaled features by the format's top "
            "level (contract.Format(...).top) before training")
    return levels


def _samples(X, scheme, levels, rng, degree):
    """This epoch's sample matrices, in draw order."""
    if scheme == "float":
        return [X]
    if scheme == "nearest":
        return [_quantize(X, levels, "nearest", None)]
    n = {"naive": 1, "chebyshev": degree + 1}.get(scheme, 2)
    return [_quantize(X, levels, "stochastic", rng) for _ in range(n)]


def _batch_gradient(S, F, y, w, loss, scheme, coef=None, band=0.0):
    """Sum over a batch's rows of the scheme's gradient estimates, all dot products taken with
    model ``w``; ``S`` holds the batch's sample matrices, ``F`` its full-precision rows.
    Returns ``(gradient_sum, rows_refetched)``."""
    if scheme == "double_symmetric":
        A, B = S
        gA = gradient_scalar(A @ w, y, loss)
        gB = gradient_scalar(B @ w, y, loss)
        return 0.5 * (gA @ B + gB @ A), 0
    if scheme == "chebyshev":
        dots = np.stack([Q @ w for Q in S[1:]], axis=1)         # (rows, d), independent
        powers = np.cumprod(y[:, None] * dots, axis=1)          # unbiased estimates of m**j
        poly = coef[0] + powers @ coef[1:]
        return (-y * poly) @ S[0], 0
    if scheme == "refetch":
        A, B = S
        margin = y * (A @ w)
        near = np.abs(margin - 1.0) <= band
        margin[near] = y[near] * (F[near] @ w)
        g = np.where(margin < 1.0, -y, 0.0)
        return g[~near] @ B[~near] + g[near] @ F[near], int(near.sum())
    return gradient_scalar(S[0] @ w, y, loss) @ S[-1], 0


def train_reference(X, y, *, loss="squared", scheme="double", bits=4, levels=None, epochs=10,
                    lr=2.0 ** -6, batch=1, lr_decay_epochs=0, seed=0, w0=None, degree=3,
                    radius=4.0, band=0.1, info=None):
    """Train a linear model by SGD on (quantized) samples; return ``(w, loss_curve)``.

    Parameters
    ----------
    X : (K, n) array, features in level space (scaled, times ``Format.top``), bias column included.
    y : (K,) array, labels in [-1, 1] (squared) or {-1, +1} (logistic, hinge).
    loss : "squared", "logistic" or "hinge".
    scheme : one of :data:`SCHEMES` (see the module docstring).
    bits : b; the uniform grid has s = 2**b levels, signed if X has a negative entry, else
        unsigned (:func:`uniform_levels`).
    levels : optional sorted level array used instead of the grid (any quantized scheme).
    epochs, lr, batch, lr_decay_epochs : the step size of epoch e is
        ``lr / 2**(e // lr_decay_epochs)`` (0 = constant). Rows are visited in order, cut into
        batches of ``batch`` rows: the dot products of a batch use the model as of the batch
        start, then the batch's per-row updates are all applied, so the step is the *sum* of the
        row updates (as on the device); ``batch=1`` is sequential SGD, ``batch=K`` gradient
        descent with step ``lr * K`` on the mean loss.
    seed : seed of the numpy Generator drawing the stochastic samples.
    w0 : initial model (zeros by default).
    degree, radius : the ``"chebyshev"`` scheme's polynomial (:func:`chebyshev_sigmoid`).
    band : the ``"refetch"`` scheme's band around the hinge point. A row outside the band takes
        the quantized decision; it is wrong only if |Q_A(a).x - a.x| > band, which by Hoeffding
        has probability <= 2 exp(-2 band**2 / sum_i (x_i delta_i)**2), delta_i the width of the
        level interval holding a_i; the bias of the expected gradient is at most that
        probability times ||a|| per row.
    info : optional dict, filled with ``levels`` (the level array, None for "float"), and per
        scheme ``refetch_fraction`` (refetched rows / rows processed), ``chebyshev_coef`` and
        ``chebyshev_error``.

    Returns
    -------
    w : (n,) float64 array.
    loss_curve : (epochs + 1,) array, the loss on the full-precision X after each epoch
        (entry 0 before training).
    """
    X, y = _check_data(X, y, loss)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    if scheme == "chebyshev" and loss != "logistic":
        raise ValueError("the chebyshev scheme is for the logistic loss")
    if scheme == "refetch" and loss != "hinge":
        raise ValueError("the refetch scheme is for the hinge loss")
    if batch < 1 or epochs < 0 or lr_decay_epochs < 0:
        raise ValueError("batch must be >= 1, epochs and lr_decay_epochs >= 0")
    K, n = X.shape
    levels = _resolve_levels(X, scheme, bits, levels)
    rng = np.random.default_rng(seed)
    w = np.zeros(n) if w0 is None else np.array(w0, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"w0 must have shape ({n},)")
    info = {} if info is None else info
    info["levels"] = levels
    coef = None
    if scheme == "chebyshev":
        coef, err = chebyshev_sigmoid(degree, radius)
        info["chebyshev_coef"], info["chebyshev_error"] = coef, err
    refetched = 0
    fixed = _samples(X, scheme, levels, rng, degree) if scheme in ("float", "nearest") else None

    curve = [loss_value(X, y, w, loss)]
    for e in range(epochs):
        step = lr / 2.0 ** (e // lr_decay_epochs) if lr_decay_epochs else lr
        S = fixed if fixed is not None else _samples(X, scheme, levels, rng, degree)
        for start in range(0, K, batch):
            sl = slice(start, start + batch)
            g, n_ref = _batch_gradient([Q[sl] for Q in S], X[sl], y[sl], w, loss, scheme,
                                       coef, band)
            w = w - step * g
            refetched += n_ref
        curve.append(loss_value(X, y, w, loss))
    if scheme == "refetch":
        info["refetch_fraction"] = refetched / max(1, K * epochs)
    return w, np.array(curve)


# --- the least-squares bias of single versus double sampling ------------------------------------

def rounding_variance(values, levels):
    """Var Q(v) of stochastic rounding onto ``levels``: (l_hi - v)(v - l_lo), per value."""
    levels = np.asarray(levels, dtype=np.float64)
    v = np.clip(np.asarray(values, dtype=np.float64), levels[0], levels[-1])
    lo = np.clip(np.searchsorted(levels, v, side="right") - 1, 0, len(levels) - 2)
    return (levels[lo + 1] - v) * (v - levels[lo])


def least_squares_gradient_draws(X, y, w, *, scheme="double", bits=4, levels=None, n_draws=1000,
                                 seed=0):
    """``n_draws`` independent estimates of the full least-squares gradient
    (1/K) sum_k a_k (a_k.w - y_k) under ``scheme`` ("float", "naive", "double",
    "double_symmetric", "double_optimal"); returns an (n_draws, n) array."""
    X, y = _check_data(X, y, "squared")
    if scheme not in ("float", "naive", "double", "double_symmetric", "double_optimal"):
        raise ValueError(f"no least-squares gradient estimator for scheme {scheme!r}")
    w = np.asarray(w, dtype=np.float64)
    levels = _resolve_levels(X, scheme, bits, levels)
    rng = np.random.default_rng(seed)
    K = X.shape[0]
    out = np.empty((n_draws, X.shape[1]))
    for i in range(n_draws):
        S = _samples(X, scheme, levels, rng, 0)
        out[i] = _batch_gradient(S, X, y, w, "squared", scheme)[0] / K
    return out


def least_squares_gradient_bias(X, y, w, *, scheme="double", bits=4, levels=None, n_draws=1000,
                                seed=0):
    """Measured bias of a least-squares gradient estimator: ``(mean - exact, standard_error)``,
    per coordinate, over ``n_draws`` draws (:func:`least_squares_gradient_draws`)."""
    draws = least_squares_gradient_draws(X, y, w, scheme=scheme, bits=bits, levels=levels,
                                         n_draws=n_draws, seed=seed)
    X = np.asarray(X, dtype=np.float64)
    exact = X.T @ (X @ np.asarray(w, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    exact /= X.shape[0]
    return draws.mean(axis=0) - exact, draws.std(axis=0, ddof=1) / np.sqrt(n_draws)


def naive_least_squares_limit(X, y, levels):
    """Where naive single-sample SGD on least squares goes: the predicted gradient bias is
    D w with D = diag(mean_k Var Q(a_k)), so the fixed point is the ridge solution
    (X^T X / K + D)^-1 X^T y / K. Returns ``(w_limit, D_diagonal)``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    K = X.shape[0]
    d = rounding_variance(X, levels).mean(axis=0)
    return np.linalg.solve(X.T @ X / K + np.diag(d), X.T @ y / K), d
