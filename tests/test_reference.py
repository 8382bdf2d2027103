"""The float64 reference trainer: bias of single vs double sampling, convergence, batch rules.

Statistical checks use K_SIGMA standard errors estimated from the draws themselves, so a check
fails with probability below about 1e-6 per coordinate when the claim holds, and fails for sure
when the estimator carries a bias of many standard errors (the naive scheme shows that it can).
"""

import numpy as np
import pytest

from zipml import contract
from zipml.host.reference import (
    chebyshev_sigmoid,
    gradient_scalar,
    least_squares_gradient_bias,
    loss_value,
    naive_least_squares_limit,
    rounding_variance,
    train_reference,
    uniform_levels,
)

K_SIGMA = 5.0


def regression(K=120, n=4, bits=2, seed=1, noise=0.1):
    """Features uniform in [-1, 1] plus a bias column, in level space; labels in [-1, 1]."""
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.uniform(-1, 1, (K, n)), np.ones((K, 1))])
    w = rng.uniform(-1, 1, n + 1) / np.sqrt(n + 1)
    y = np.clip(X @ w + noise * rng.standard_normal(K), -1, 1)
    return X * contract.Format(bits=bits).top, y


def classification(K=200, n=4, bits=4, seed=2, scale=2.0):
    """Labels drawn from a logistic model with ||w|| = scale, so the optimal margins stay
    moderate (within the Chebyshev interval); features as in :func:`regression`."""
    rng = np.random.default_rng(seed)
    X = np.hstack([rng.uniform(-1, 1, (K, n)), np.ones((K, 1))])
    w = rng.standard_normal(n + 1)
    w *= scale / np.linalg.norm(w)
    y = np.where(rng.random(K) < 1 / (1 + np.exp(-X @ w)), 1.0, -1.0)
    return X * contract.Format(bits=bits).top, y


def exact_gradient(X, y, w):
    return X.T @ (X @ w - y) / len(y)


# --- the least-squares gradient: double sampling is unbiased, naive has bias D x ---------------

@pytest.mark.parametrize("scheme", ["double", "double_symmetric", "double_optimal"])
def test_double_sampled_gradient_is_unbiased(scheme):
    X, y = regression(bits=2)
    w = np.array([1.5, -1.0, 2.0, -2.0, 0.5])
    bias, se = least_squares_gradient_bias(X, y, w, scheme=scheme, bits=2, n_draws=2000, seed=3)
    assert np.all(se > 0)
    assert np.all(np.abs(bias) <= K_SIGMA * se), bias / se


def test_naive_gradient_has_the_predicted_bias():
    X, y = regression(bits=2)
    w = np.array([1.5, -1.0, 2.0, -2.0, 0.5])
    bias, se = least_squares_gradient_bias(X, y, w, scheme="naive", bits=2, n_draws=2000, seed=4)
    _, d = naive_least_squares_limit(X, y, uniform_levels(2))
    predicted = d * w                       # mean over rows of diag(Var Q(a_k)) w
    assert np.all(np.abs(bias - predicted) <= K_SIGMA * se), (bias - predicted) / se
    # Significantly non-zero on every feature (the bias column is exact, so zero there).
    assert np.all(np.abs(bias[:-1]) > 4 * K_SIGMA * se[:-1]), bias / se
    assert d[-1] == 0.0


def test_rounding_variance():
    levels = uniform_levels(2)                              # -0.75, -0.25, 0.25, 0.75
    v = np.array([-0.75, -0.5, 0.0, 0.25, 0.6])
    np.testing.assert_allclose(rounding_variance(v, levels),
                               [0.0, 0.0625, 0.0625, 0.0, 0.15 * 0.35])


# --- convergence on a small least-squares problem ----------------------------------------------

def test_double_sampling_converges_where_naive_is_biased():
    bits = 1                                      # the bias matters most at few bits
    X, y = regression(K=200, bits=bits, seed=5, noise=0.3)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    f_star = loss_value(X, y, w_star, "squared")
    w_ridge, _ = naive_least_squares_limit(X, y, uniform_levels(bits))
    gap = loss_value(X, y, w_ridge, "squared") - f_star      # naive's predicted excess loss
    assert gap > 0.5 * f_star

    def final(scheme):
        _, curve = train_reference(X, y, scheme=scheme, bits=bits, epochs=30, lr=2.0 ** -4,
                                   lr_decay_epochs=5, seed=6)
        return curve[-1]

    f_float, f_double, f_naive = final("float"), final("double"), final("naive")
    assert f_float <= 1.05 * f_star
    # Double sampling: within 5 % of the optimum, a small fraction of naive's predicted gap.
    assert f_double <= 1.05 * f_star
    assert f_double - f_star <= 0.1 * gap
    # Naive: stuck at the ridge solution the bias D x predicts (over seeds 0..4 its excess loss
    # is 0.96 to 1.03 times the predicted gap).
    assert abs(f_naive - (f_star + gap)) <= 0.1 * gap


# --- non-linear losses ---------------------------------------------------------------------------

def test_chebyshev_estimator_is_unbiased_for_the_polynomial_gradient():
    # One bit and a large model with margins still inside [-4, 4]: reusing one sample for two
    # powers of the dot product would show a bias of some 30 standard errors here.
    X, y = classification(K=60, bits=1)
    w0 = np.array([3.0, -3.0, 3.0, -3.0, 0.0])
    lr, degree, radius = 2.0 ** -4, 3, 4.0
    coef, err = chebyshev_sigmoid(degree, radius)
    # One full-batch step from w0 exposes the sum of the row estimates: w0 - w1 = lr * sum g.
    draws = np.array([
        (w0 - train_reference(X, y, loss="logistic", scheme="chebyshev", bits=1, epochs=1,
                              lr=lr, batch=len(y), w0=w0, seed=s, degree=degree,
                              radius=radius)[0]) / (lr * len(y))
        for s in range(1500)])
    margin = y * (X @ w0)
    assert np.all(np.abs(margin) <= radius)
    poly_grad = X.T @ (-y * np.polynomial.polynomial.polyval(margin, coef)) / len(y)
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - poly_grad) <= K_SIGMA * se)
    # The polynomial's own bias obeys the documented bound.
    true_grad = X.T @ gradient_scalar(X @ w0, y, "logistic") / len(y)
    bound = err * np.max(np.linalg.norm(X, axis=1))
    assert np.linalg.norm(poly_grad - true_grad) <= bound
    assert 0 < err < 0.05


def test_chebyshev_logistic_reduces_the_loss():
    X, y = classification(bits=4)
    info = {}
    _, curve = train_reference(X, y, loss="logistic", scheme="chebyshev", bits=4, epochs=10,
                               lr=2.0 ** -4, seed=0, info=info)
    _, ref = train_reference(X, y, loss="logistic", scheme="float", epochs=10, lr=2.0 ** -4)
    assert curve[0] == pytest.approx(np.log(2))
    assert curve[-1] < 0.8 * curve[0]
    # The sigmoid's approximation error is 0.035 (degree 3 on [-4, 4]): close to float training.
    assert abs(curve[-1] - ref[-1]) < 0.02
    assert len(info["chebyshev_coef"]) == 4


def test_refetch_hinge_reduces_the_loss_and_counts_refetches():
    X, y = classification(bits=2)
    info = {}
    _, curve = train_reference(X, y, loss="hinge", scheme="refetch", bits=2, epochs=10,
                               lr=2.0 ** -5, band=0.2, seed=0, info=info)
    assert curve[-1] < 0.6 * curve[0]
    assert 0.0 < info["refetch_fraction"] < 1.0
    # An infinite band refetches every row: exactly full-precision training.
    full = {}
    w_all, _ = train_reference(X, y, loss="hinge", scheme="refetch", bits=2, epochs=3,
                               band=np.inf, info=full)
    w_float, _ = train_reference(X, y, loss="hinge", scheme="float", epochs=3)
    assert full["refetch_fraction"] == 1.0
    np.testing.assert_array_equal(w_all, w_float)


# --- batch and step-size semantics --------------------------------------------------------------

def manual_sgd(X, y, loss, epochs, lr, batch, lr_decay_epochs):
    """Plain loops: snapshot model per batch, sum of the row updates, lr halved every k epochs."""
    w = np.zeros(X.shape[1])
    for e in range(epochs):
        step = lr / 2 ** (e // lr_decay_epochs) if lr_decay_epochs else lr
        for start in range(0, len(y), batch):
            snapshot = w.copy()
            for k in range(start, min(start + batch, len(y))):
                w -= step * gradient_scalar(X[k] @ snapshot, y[k], loss) * X[k]
    return w


@pytest.mark.parametrize("batch", [1, 7, 120])
@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_batch_semantics(batch, loss):
    X, y = regression(K=120)
    if loss == "logistic":
        y = np.where(y >= 0, 1.0, -1.0)
    w, curve = train_reference(X, y, loss=loss, scheme="float", epochs=4, lr=2.0 ** -6,
                               batch=batch, lr_decay_epochs=2)
    np.testing.assert_allclose(w, manual_sgd(X, y, loss, 4, 2.0 ** -6, batch, 2), atol=1e-12)
    assert curve[-1] == pytest.approx(loss_value(X, y, w, loss))


def test_full_batch_is_gradient_descent():
    X, y = regression(K=50)
    w, lr = np.zeros(X.shape[1]), 2.0 ** -8
    for _ in range(5):
        w = w - lr * len(y) * exact_gradient(X, y, w)
    got, _ = train_reference(X, y, scheme="float", epochs=5, lr=lr, batch=len(y))
    np.testing.assert_allclose(got, w, atol=1e-12)


# --- levels, determinism, validation ------------------------------------------------------------

def test_levels_and_determinism():
    X, y = regression(bits=3)
    info = {}
    train_reference(X, y, scheme="double_optimal", bits=3, epochs=1, info=info)
    lv = info["levels"]
    assert len(lv) == 8 and lv[0] == X.min() and lv[-1] == X.max()
    np.testing.assert_allclose(uniform_levels(3), (2 * np.arange(8) - 7) / 8)
    np.testing.assert_allclose(uniform_levels(3, signed=False), np.arange(8) / 8)
    a = train_reference(X, y, scheme="nearest", bits=3, epochs=2, seed=0)[0]
    b = train_reference(X, y, scheme="nearest", bits=3, epochs=2, seed=1)[0]
    np.testing.assert_array_equal(a, b)
    c = train_reference(X, y, scheme="double", bits=3, epochs=2, seed=0)[0]
    d = train_reference(X, y, scheme="double", bits=3, epochs=2, seed=0)[0]
    np.testing.assert_array_equal(c, d)
    # Unsigned data rounds onto the unsigned grid.
    Xu = (X + 1) / 2 * contract.Format(bits=3).top
    train_reference(Xu, y, scheme="naive", bits=3, epochs=1, info=info)
    np.testing.assert_allclose(info["levels"], np.arange(8) / 8)


def test_validation():
    X, y = regression(bits=4)
    with pytest.raises(ValueError, match="top level"):
        train_reference(X / contract.Format(bits=4).top, y, scheme="double", bits=4)
    with pytest.raises(ValueError, match="labels"):
        train_reference(X, y, loss="logistic", scheme="float")
    with pytest.raises(ValueError, match="chebyshev"):
        train_reference(X, y, scheme="chebyshev")
    with pytest.raises(ValueError, match="scheme"):
        train_reference(X, y, scheme="fancy")
    _, curve = train_reference(X, y, scheme="float", epochs=3, w0=np.ones(X.shape[1]))
    assert len(curve) == 4
    assert curve[0] == pytest.approx(loss_value(X, y, np.ones(X.shape[1]), "squared"))
