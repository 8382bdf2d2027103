"""Validation, feature and label scaling, and the way back to the user's units."""

import numpy as np
import pytest
import scipy.sparse

from zipml.contract import Encoding, Format, LevelMode
from zipml.host.scaling import FeatureScaler, LabelScaler, add_bias, check_xy, unscale_model


def data(seed=0, n_rows=50):
    """Columns of different ranges, one constant column (index 2)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, 4)) * [1.0, 100.0, 0.0, 1e-3] + [0.0, -50.0, 7.0, 3.0]
    y = rng.normal(size=n_rows) * 30.0 + 5.0
    return X, y


def test_check_xy_converts_to_float64():
    X, y = check_xy([[1, 2], [3, 4]], [5, 6])
    assert X.dtype == np.float64 and X.shape == (2, 2)
    assert y.dtype == np.float64 and y.shape == (2,)
    X = check_xy([[1, 2]])
    assert isinstance(X, np.ndarray) and X.shape == (1, 2)


def test_check_xy_densifies_sparse_input():
    X = check_xy(scipy.sparse.csr_matrix(np.eye(3)))
    np.testing.assert_array_equal(X, np.eye(3))


@pytest.mark.parametrize("bad, where", [(np.nan, "NaN at row 2, column 1"),
                                        (np.inf, "inf at row 2, column 1"),
                                        (-np.inf, "inf at row 2, column 1")])
def test_non_finite_X_names_row_and_column(bad, where):
    X = np.ones((4, 3))
    X[2, 1] = bad
    X[3, 0] = bad
    with pytest.raises(ValueError, match=where):
        check_xy(X)


def test_non_finite_y_names_row():
    with pytest.raises(ValueError, match="y contains NaN at row 1"):
        check_xy(np.ones((3, 2)), [0.0, np.nan, 1.0])


@pytest.mark.parametrize("X, y, message", [
    (np.empty((0, 3)), None, "X is empty"),
    (np.empty((3, 0)), None, "X is empty"),
    ([], None, "must be 2-D"),
    ([[1.0, 2.0], [3.0]], None, "ragged rows: row 0 has 2 values, row 1 has 1"),
    ([1.0, 2.0, 3.0], None, "must be 2-D.*X.reshape"),
    (np.ones((2, 2, 2)), None, "must be 2-D"),
    (5.0, None, "must be 2-D"),
    ([["a", "b"]], None, "must be numeric"),
    (np.ones((3, 2)), [1.0, 2.0], "X has 3 rows but y has 2"),
    (np.ones((3, 2)), np.ones((3, 1)), "y must be 1-D"),
    (np.ones((3, 2)), [], "y is empty"),
])
def test_bad_input_is_rejected_with_a_clear_message(X, y, message):
    with pytest.raises(ValueError, match=message):
        check_xy(X, y)


def test_too_many_features_is_rejected():
    check_xy(np.ones((2, 5)), max_features=5)
    with pytest.raises(ValueError, match="6 features, more than the 5 supported"):
        check_xy(np.ones((2, 6)), max_features=5)


@pytest.mark.parametrize("signed, low", [(True, -1.0), (False, 0.0)])
def test_feature_scaler_maps_columns_onto_the_range(signed, low):
    X, _ = data()
    scaler = FeatureScaler(signed=signed).fit(X)
    assert scaler.n_features_in_ == 4
    np.testing.assert_array_equal(scaler.data_min_, X.min(axis=0))
    np.testing.assert_array_equal(scaler.data_max_, X.max(axis=0))
    xs = scaler.transform(X)
    varies = [0, 1, 3]
    np.testing.assert_array_equal(xs[:, varies].min(axis=0), low)   # endpoints exact
    np.testing.assert_array_equal(xs[:, varies].max(axis=0), 1.0)
    np.testing.assert_array_equal(xs[:, 2], 0.0)                     # constant column
    np.testing.assert_allclose(scaler.inverse_transform(xs), X, rtol=1e-12, atol=1e-12)


def test_feature_scaler_is_linear_and_clips_outside_the_fitted_range():
    scaler = FeatureScaler().fit([[0.0, 10.0], [4.0, 20.0]])
    xs = scaler.transform([[1.0, 12.5], [-3.0, 25.0], [9.0, 5.0]])
    np.testing.assert_array_equal(xs, [[-0.5, -0.5], [-1.0, 1.0], [1.0, -1.0]])
    unsigned = FeatureScaler(signed=False).fit([[0.0, 10.0], [4.0, 20.0]])
    np.testing.assert_array_equal(unsigned.transform([[1.0, 30.0]]), [[0.25, 1.0]])


def test_feature_scaler_errors():
    with pytest.raises(ValueError, match="not fitted"):
        FeatureScaler().transform(np.ones((2, 2)))
    scaler = FeatureScaler().fit(np.ones((2, 2)))
    with pytest.raises(ValueError, match="3 features, the scaler was fitted on 2"):
        scaler.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN at row 0, column 1"):
        scaler.transform([[0.0, np.nan]])


def test_label_scaler_round_trip():
    _, y = data()
    scaler = LabelScaler().fit(y)
    ys = scaler.transform(y)
    assert ys.min() == -1.0 and ys.max() == 1.0
    np.testing.assert_allclose(scaler.inverse(ys), y, rtol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform([1e3])), [1e3])


def test_label_scaler_constant_labels():
    scaler = LabelScaler().fit([3.0, 3.0, 3.0])
    np.testing.assert_array_equal(scaler.transform([3.0, 3.0]), [0.0, 0.0])
    np.testing.assert_array_equal(scaler.inverse([0.0, 0.5]), [3.0, 3.0])
    with pytest.raises(ValueError, match="not fitted"):
        LabelScaler().transform([1.0])


def test_add_bias_appends_a_constant_column():
    xb = add_bias(np.zeros((3, 2)), 0.75)
    np.testing.assert_array_equal(xb, [[0, 0, 0.75]] * 3)
    with pytest.raises(ValueError, match="2-D"):
        add_bias(np.zeros(3), 1.0)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("fmt", [Format(Encoding.PAIR, 1), Format(Encoding.COMPACT, 4),
                                 Format(Encoding.SINGLE, 8, LevelMode.UNIFORM_UNSIGNED),
                                 Format(Encoding.RAW)])
def test_unscale_model_reproduces_the_device_prediction(signed, fmt):
    """X @ coef + intercept == label_scaler.inverse(v @ w) with v = top * [xs, 1]."""
    X, y = data(seed=3)
    features, labels = FeatureScaler(signed=signed).fit(X), LabelScaler().fit(y)
    v = fmt.top * add_bias(features.transform(X), 1.0)
    w = np.random.default_rng(4).normal(size=X.shape[1] + 1)
    coef, intercept = unscale_model(w, features, labels, fmt.top)
    assert coef.shape == (X.shape[1],) and coef[2] == 0.0
    np.testing.assert_allclose(X @ coef + intercept, labels.inverse(v @ w), rtol=1e-10,
                               atol=1e-9)
    X_new = np.random.default_rng(5).uniform(X.min(axis=0), X.max(axis=0), size=(20, 4))
    v_new = fmt.top * add_bias(features.transform(X_new), 1.0)
    np.testing.assert_allclose(X_new @ coef + intercept, labels.inverse(v_new @ w),
                               rtol=1e-10, atol=1e-9)


def test_unscale_model_without_label_scaling_gives_margins():
    X, _ = data(seed=6)
    features = FeatureScaler().fit(X)
    top = Format().top
    w = np.arange(1.0, 6.0)
    coef, intercept = unscale_model(w, features, None, top)
    np.testing.assert_allclose(X @ coef + intercept, top * add_bias(features.transform(X), 1) @ w,
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="5 entries"):
        unscale_model(w[:4], features, None, top)
