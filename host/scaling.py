"""Validation and scaling of user data, and the way back to the user's units.

The device sees level-space features ``v = top * xs``: ``xs`` the features scaled per column onto
[-1, 1] (or [0, 1]) by :class:`FeatureScaler`, plus a last bias column whose scaled value is 1,
and labels scaled onto [-1, 1] by :class:`LabelScaler` (docs/NUMERICS.md section 1).
:func:`unscale_model` turns a model over those columns back into ``coef`` and ``intercept`` in the
user's units.
"""

import numpy as np

__all__ = ["check_xy", "FeatureScaler", "LabelScaler", "add_bias", "unscale_model"]


def _as_float_array(a, name):
    """``a`` as a float64 array; ValueError for ragged or non-numeric input."""
    if hasattr(a, "toarray"):                     # scipy.sparse (e.g. load_svmlight_file)
        a = a.toarray()
    if not isinstance(a, np.ndarray) and isinstance(a, (list, tuple)):
        lengths = [len(r) if isinstance(r, (list, tuple, np.ndarray)) else None for r in a]
        if any(n is not None for n in lengths) and len(set(lengths)) > 1:
            bad = next(i for i, n in enumerate(lengths) if n != lengths[0])
            say = [f"{n} values" if n is not None else "a scalar" for n in lengths]
            raise ValueError(f"{name} has ragged rows: row 0 has {say[0]}, row {bad} has "
                             f"{say[bad]}")
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric (an array of numbers): {exc}") from None


def _check_finite(a, name):
    """Raise ValueError naming the first NaN or inf of ``a`` (1-D or 2-D)."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    where = np.argwhere(bad)[0]
    kind = "NaN" if np.isnan(a[tuple(where)]) else "inf"
    place = f"row {where[0]}" + (f", column {where[1]}" if a.ndim == 2 else "")
    raise ValueError(f"{name} contains {kind} at {place} ({int(bad.sum())} non-finite values in "
                     f"all); remove or impute them first")


def _check_y(y, n_rows=None):
    """``y`` as a finite, non-empty 1-D float64 array (of ``n_rows`` entries if given)."""
    y = _as_float_array(y, "y")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}; use y.ravel() for a "
                         f"single column")
    if y.size == 0:
        raise ValueError("y is empty")
    if n_rows is not None and len(y) != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {len(y)} entries")
    _check_finite(y, "y")
    return y


def check_xy(X, y=None, *, max_features=None):
    """Validate user data and return it as float64 arrays.

    Returns X (2-D) when ``y`` is None, else ``(X, y)`` with y 1-D of the same length. Sparse
    matrices are densified. Raises ValueError naming the problem: non-numeric, ragged rows,
    wrong dimensionality, empty, NaN or inf (with its row and column), y length mismatch, or
    more than ``max_features`` columns.

    Parameters
    ----------
    X : array-like (n_samples, n_features)
    y : array-like (n_samples,), optional
    max_features : int, optional
        Largest number of columns accepted (e.g. the device's dimension minus the bias column).
    """
    X = _as_float_array(X, "X")
    if X.ndim != 2:
        hint = "; use X.reshape(-1, 1) for a single feature" if X.ndim == 1 else ""
        raise ValueError(f"X must be 2-D (n_samples, n_features), got {X.ndim}-D with shape "
                         f"{X.shape}{hint}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape}); it needs at least one row and one column")
    _check_finite(X, "X")
    if max_features is not None and X.shape[1] > max_features:
        raise ValueError(f"X has {X.shape[1]} features, more than the {max_features} supported")
    if y is None:
        return X
    return X, _check_y(y, X.shape[0])


def _not_fitted(obj):
    from sklearn.exceptions import NotFittedError  # imported here: sklearn is slow to import
    return NotFittedError(f"this {type(obj).__name__} is not fitted yet; call fit first")


class FeatureScaler:
    """Per-column min-max scaling onto [-1, 1] (signed) or [0, 1] (unsigned).

    Values outside the fitted range are clipped; constant columns map to 0.0 (the bias column
    carries offsets).

    Parameters
    ----------
    signed : bool
        Target [-1, 1] if True, [0, 1] otherwise.

    Members
    -------
    data_min_, data_max_ : float arrays (n_features,)
        Per-column minimum and maximum seen by :meth:`fit`.
    n_features_in_ : int
    """

    def __init__(self, signed=True):
        self.signed = signed

    def fit(self, X):
        """Store per-column min and max of ``X``; return self."""
        X = check_xy(X)
        self.data_min_ = X.min(axis=0)
        self.data_max_ = X.max(axis=0)
        self.n_features_in_ = X.shape[1]
        return self

    def _check(self, X):
        if not hasattr(self, "data_min_"):
            raise _not_fitted(self)
        X = check_xy(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the scaler was fitted on "
                             f"{self.n_features_in_}")
        return X

    def _span(self):
        span = self.data_max_ - self.data_min_
        varies = span > 0
        return np.where(varies, span, 1.0), varies

    def transform(self, X):
        """Scale ``X`` column by column (clipping to the fitted range)."""
        X = self._check(X)
        span, varies = self._span()
        unit = (np.clip(X, self.data_min_, self.data_max_) - self.data_min_) / span
        xs = 2.0 * unit - 1.0 if self.signed else unit
        return np.where(varies, xs, 0.0)

    def fit_transform(self, X):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Xs):
        """Map scaled values back to the user's units (constant columns give their value)."""
        Xs = self._check(Xs)
        span, varies = self._span()
        unit = (Xs + 1.0) / 2.0 if self.signed else Xs
        return self.data_min_ + np.where(varies, unit * span, 0.0)

    def affine(self):
        """``(a, c)`` with ``transform(X) == a * X + c`` inside the fitted range (a = c = 0 for
        constant columns)."""
        if not hasattr(self, "data_min_"):
            raise _not_fitted(self)
        span, varies = self._span()
        gain = 2.0 if self.signed else 1.0
        a = np.where(varies, gain / span, 0.0)
        c = np.where(varies, -a * self.data_min_ - (1.0 if self.signed else 0.0), 0.0)
        return a, c


class LabelScaler:
    """Min-max scaling of regression labels onto [-1, 1] (a constant y maps to 0).

    Labels are not clipped: the map stays linear outside the fitted range.

    Members
    -------
    data_min_, data_max_ : float
    """

    def fit(self, y):
        """Store the min and max of ``y``; return self."""
        y = _check_y(y)
        self.data_min_ = float(y.min())
        self.data_max_ = float(y.max())
        return self

    def _span(self):
        if not hasattr(self, "data_min_"):
            raise _not_fitted(self)
        return self.data_max_ - self.data_min_

    def transform(self, y):
        """Scale ``y`` onto [-1, 1]."""
        span = self._span()
        y = _check_y(y)
        if span == 0:
            return np.zeros_like(y)
        return 2.0 * ((y - self.data_min_) / span) - 1.0

    def fit_transform(self, y):
        """``fit(y).transform(y)``."""
        return self.fit(y).transform(y)

    def inverse_transform(self, ys):
        """Map scaled labels (or predictions) back to the user's units."""
        span = self._span()
        ys = np.asarray(ys, dtype=np.float64)
        return self.data_min_ + (ys + 1.0) * (span / 2.0)

    inverse = inverse_transform

    def affine(self):
        """``(alpha, beta)`` with ``inverse_transform(z) == alpha * z + beta``."""
        span = self._span()
        return span / 2.0, self.data_min_ + span / 2.0


def add_bias(Xs, value=1.0):
    """Append a constant column.

    Parameters
    ----------
    Xs : float array (n_samples, n_features)
    value : float
        The column's value (1.0 in scaled units: the bias lands on the top level).
    """
    Xs = np.asarray(Xs, dtype=np.float64)
    if Xs.ndim != 2:
        raise ValueError(f"add_bias needs a 2-D array, got shape {Xs.shape}")
    return np.hstack([Xs, np.full((Xs.shape[0], 1), float(value))])


def unscale_model(w, feature_scaler, label_scaler, top):
    """A model over level-space columns, in the user's units.

    The device computes ``z = v @ w`` with ``v = top * [xs, 1]`` and ``xs =
    feature_scaler.transform(X)``; this returns ``(coef, intercept)`` with
    ``X @ coef + intercept == label_scaler.inverse(z)`` (up to float rounding, for X inside the
    fitted range). Constant columns get coefficient 0.

    Parameters
    ----------
    w : float array (n_features + 1,)
        Model in scaled-label units, bias last.
    feature_scaler : FeatureScaler
        Fitted.
    label_scaler : LabelScaler or None
        None when labels were not scaled (classification): the result is then in margin units.
    top : float
        ``contract.Format.top`` of the format the model was trained with.
    """
    w = np.asarray(w, dtype=np.float64)
    a, c = feature_scaler.affine()
    if w.shape != (len(a) + 1,):
        raise ValueError(f"w must have {len(a) + 1} entries (features then bias), got shape "
                         f"{w.shape}")
    alpha, beta = (1.0, 0.0) if label_scaler is None else label_scaler.affine()
    coef = alpha * top * a * w[:-1]
    intercept = alpha * top * (float(c @ w[:-1]) + w[-1]) + beta
    return coef, float(intercept)
