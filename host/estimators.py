"""scikit-learn estimators that train linear models on a ZipML device.

:class:`ZipMLRegressor` (squared loss) and :class:`ZipMLClassifier` (logistic or hinge loss;
one-vs-rest for more than two classes) wrap :func:`zipml.host.train.train`. Everything the user
gives is validated before anything is sent to the device; the model lives on the device as
fixed-point words (``model_words_``) and is reported in the user's units (``coef_``,
``intercept_``); predictions are computed on the host from ``coef_`` and ``intercept_``.

Epochs and the sample stream
----------------------------
Every epoch draws fresh samples from its own generator, ``numpy.random.default_rng([seed_, k,
e])`` for model ``k`` (0 unless one-vs-rest) and epoch ``e`` counted from the first fit, and
runs with the learning rate the device would use in that epoch (``lr`` halved every
``lr_decay_epochs``). An epoch therefore depends only on the model words it starts from and its
index, so ``fit`` with ``epochs=E`` and ``E`` calls of ``partial_fit`` (or a fit with
``warm_start=True`` resumed after an interruption) give identical ``model_words_``.
"""

import numbers
import sys
import warnings

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.quantize import ROUNDINGS
from zipml.host.scaling import FeatureScaler, LabelScaler, add_bias, check_xy, unscale_model
from zipml.host.train import Problem, lr_to_fixed, train
from zipml.sim.golden import lr_for_epoch

__all__ = ["ZipMLRegressor", "ZipMLClassifier"]

ENCODINGS = {e.name.lower(): e for e in Encoding}
LEVELS = ("uniform", "optimal")
LOSSES = {"logistic": Loss.LOGISTIC, "hinge": Loss.HINGE}
_ACCEPT_SPARSE = ("csr", "csc", "coo")
# Counters every device reports; anything else it reports (cycles, retries) is added as is.
_BASE_STATS = ("rows", "epochs", "saturated_rows", "bytes_moved")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _add_stats(figures, stats, before, after):
    """Add one training call's figures to ``figures``: ``TrainResult.stats``, and the growth
    of the device's running totals from ``before`` to ``after`` (:func:`_device_figures`)."""
    for key in _BASE_STATS:
        figures[key] += int(stats[key])
    figures["row_words"] = int(stats["row_words"])
    for key, value in after.items():
        figures[key] = figures.get(key, 0) + value - before.get(key, 0)


def _device_figures(device):
    """Extra integer figures a device keeps in ``counters`` or ``stats`` (retries, bytes
    sent): running totals, so a call's share is their difference."""
    figures = {}
    for source in (getattr(device, "counters", None), getattr(device, "stats", None)):
        if source is None:
            continue
        items = source.items() if isinstance(source, dict) else vars(source).items()
        for key, value in items:
            if key not in _BASE_STATS and not key.startswith("_") and _is_int(value):
                figures[key] = int(value)
    return figures


class _ZipMLBase(BaseEstimator):
    """What the regressor and the classifier share: parameters, checks and the epoch loop."""

    _loss_param = None

    # --- parameters ------------------------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags

    def _loss(self):
        return Loss.SQUARED

    def _check_params(self):
        """Validate the parameters; return the sample format. Nothing touches the device."""
        if not isinstance(self.device, str) and not hasattr(self.device, "process"):
            raise ValueError(f"device must be a device name such as 'golden' or an opened "
                             f"device object, not {self.device!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {sorted(ENCODINGS)}, not "
                             f"{self.encoding!r}")
        encoding = ENCODINGS[self.encoding]
        if not _is_int(self.bits) or not 1 <= self.bits <= contract.MAX_BITS:
            raise ValueError(f"bits must be an integer from 1 to {contract.MAX_BITS}, not "
                             f"{self.bits!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, not {self.rounding!r}")
        if self.levels not in LEVELS:
            raise ValueError(f"levels must be one of {LEVELS}, not {self.levels!r}")
        if not isinstance(self.signed, (bool, np.bool_)):
            raise ValueError(f"signed must be True or False, not {self.signed!r}")
        mode = LevelMode.UNIFORM_SIGNED if self.signed else LevelMode.UNIFORM_UNSIGNED
        if self.levels == "optimal" and encoding != Encoding.RAW:
            if self.bits < 2:
                raise ValueError("levels='optimal' needs bits >= 2 (one bit has only the two "
                                 "endpoints); use levels='uniform' or more bits")
            mode = LevelMode.TABLE
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, not {self.epochs!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real):
            raise ValueError(f"lr must be a number in (0, 1), not {self.lr!r}")
        lr_to_fixed(float(self.lr))
        if not _is_int(self.lr_decay_epochs) or self.lr_decay_epochs < 0:
            raise ValueError(f"lr_decay_epochs must be an integer >= 0 (0: no decay), not "
                             f"{self.lr_decay_epochs!r}")
        if not _is_int(self.batch) or self.batch < 1:
            raise ValueError(f"batch must be a positive integer, not {self.batch!r}")
        if not _is_int(self.delay) or self.delay not in (0, 1):
            raise ValueError(f"delay must be 0 or 1, not {self.delay!r}")
        if self.width is not None and self.width not in contract.WORD_WIDTHS:
            raise ValueError(f"width must be None (the device's) or one of "
                             f"{contract.WORD_WIDTHS}, not {self.width!r}")
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.RandomState)
                or (_is_int(rs) and 0 <= rs < 2**32)):
            raise ValueError(f"random_state must be None, an integer in [0, 2**32) or a "
                             f"numpy RandomState, not {rs!r}")
        return Format(encoding, self.bits, mode)

    def _check_device(self, device, n_features):
        """Capacity checks against the opened device, before anything is sent to it."""
        width = self.width or device.width
        if self.width is not None and getattr(device, "width", width) != self.width:
            raise ValueError(f"width={self.width} but the device streams {device.width}-bit "
                             f"words; leave width=None to use the device's")
        n_max = getattr(device, "n_max", None)
        if n_max is not None and n_features + 1 > n_max:
            raise ValueError(f"X has {n_features} features; the device holds models of at most "
                             f"{n_max - 1} features (plus the bias)")
        batch_max = getattr(device, "batch_max", None)
        if batch_max is not None and self.batch > batch_max:
            raise ValueError(f"batch={self.batch} is larger than the device's largest "
                             f"mini-batch, {batch_max}")
        return width

    def _open_device(self):
        """``(device, opened_here)``: the device object, opening it if given by name."""
        if isinstance(self.device, str):
            from zipml.host.devices import open_device
            return open_device(self.device, width=self.width or 128), True
        return self.device, False

    # --- data --------------------------------------------------------------------------------

    def _validate_X(self, X, reset):
        """sklearn validation of X (shape, dtype, feature names), then finiteness naming the
        row and column of the first NaN or inf."""
        X = validate_data(self, X, reset=reset, accept_sparse=_ACCEPT_SPARSE, dtype=np.float64,
                          ensure_all_finite=False)
        return check_xy(X.toarray() if hasattr(X, "toarray") else X)

    def _validate_Xy(self, X, y, reset, **kwargs):
        """:meth:`_validate_X` for training data; y is checked by sklearn (1-D, finite)."""
        X, y = validate_data(self, X, y, reset=reset, accept_sparse=_ACCEPT_SPARSE,
                             dtype=np.float64, ensure_all_finite=False, **kwargs)
        return check_xy(X.toarray() if hasattr(X, "toarray") else X), y

    # --- training ----------------------------------------------------------------------------

    def _fit(self, X, y, *, epochs, incremental, classes=None):
        fmt = self._check_params()
        loss = self._loss()
        continuing = hasattr(self, "model_words_") and (incremental or self.warm_start)
        if continuing and (fmt != self.format_ or bool(self.signed) != self._features.signed):
            raise ValueError(f"this model was trained with {self.format_} (signed="
                             f"{self._features.signed}); partial_fit and warm_start need the "
                             f"same bits, encoding, levels and signed; call fit to start over")
        X, targets = self._validate_targets(X, y, reset=not continuing, classes=classes,
                                            incremental=incremental, continuing=continuing)
        device, opened = self._open_device()
        try:
            width = self._check_device(device, X.shape[1])
            if not continuing:
                self._start(X, targets, fmt)
            xs = add_bias(self._features.transform(X), 1.0)
            ys = self._labels.transform(targets) if self._labels is not None else targets
            self._run(device, width, fmt, loss, xs, ys, epochs)
        finally:
            if opened and hasattr(device, "close"):
                device.close()
        return self

    def _start(self, X, y, fmt):
        """Fresh state: scaling, level table, seed, zero model words, empty figures."""
        rs = self.random_state
        self.seed_ = int(rs) if _is_int(rs) else \
            int(check_random_state(rs).randint(0, 2**32, dtype=np.int64))
        self._features = FeatureScaler(signed=bool(self.signed)).fit(X)
        self._labels = LabelScaler().fit(y) if self._loss() == Loss.SQUARED else None
        self.format_ = fmt
        self.levels_table_ = None
        if fmt.levels == LevelMode.TABLE:
            try:
                from zipml.host.levels import optimal_table
            except ImportError as exc:
                raise ValueError(f"levels='optimal' needs zipml.host.levels ({exc}); use "
                                 f"levels='uniform'") from None
            xs = self._features.transform(X) * fmt.top
            self.levels_table_ = tuple(int(t) for t in optimal_table(xs.ravel(), fmt))
        self.model_words_ = np.zeros((self._n_models(), X.shape[1] + 1), np.int32)
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.hw_stats_ = {"rows": 0, "epochs": 0, "bytes_moved": 0, "saturated_rows": 0,
                          "row_words": None}

    def _run(self, device, width, fmt, loss, xs, ys, epochs):
        """``epochs`` epochs of every model, each epoch seeded by its index (module docs)."""
        lr_fixed = lr_to_fixed(float(self.lr))
        bar = range(epochs)
        tty = self.verbose and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        if tty:
            from tqdm.auto import tqdm
            bar = tqdm(bar, desc=type(self).__name__, unit="epoch", file=sys.stderr)
        saturated = 0
        try:
            for _ in bar:
                saturated += self._epoch(device, width, fmt, loss, xs, ys, lr_fixed)
                if tty:
                    bar.set_postfix(loss=f"{self.loss_curve_[-1]:.5f}")
                elif self.verbose:
                    print(f"epoch {self.n_iter_:4d}  loss {self.loss_curve_[-1]:.6f}",
                          file=sys.stderr)
        finally:
            # Also when interrupted: the state is that of the last whole epoch, so partial_fit
            # or a warm-started fit resumes exactly where the run stopped.
            self._set_model()
            if tty:
                bar.close()
        if saturated:
            warnings.warn(f"{saturated} rows saturated the device's fixed-point arithmetic "
                          f"(see hw_stats_); lower lr (now {self.lr}) or set lr_decay_epochs",
                          UserWarning, stacklevel=4)

    def _epoch(self, device, width, fmt, loss, xs, ys, lr_fixed):
        """One epoch of every model; the learned state changes only once all are done.
        Returns the number of saturated rows."""
        epoch = self.n_iter_
        lr_e = lr_for_epoch(lr_fixed, self.lr_decay_epochs, epoch)
        words = self.model_words_.copy()
        stats = dict(self.hw_stats_)
        losses = []
        for k in range(len(words)):
            if lr_e == 0:       # the halvings reached zero: the device would change nothing
                losses.append(self.loss_curve_[-1] if self.loss_curve_ else np.nan)
                continue
            problem = Problem(xs, self._model_targets(ys, k), self._features, self._labels)
            before = _device_figures(device)
            res = train(device, problem, fmt=fmt, loss=loss, rounding=self.rounding,
                        table=self.levels_table_, epochs=1,
                        lr=lr_e / (1 << contract.LR_FRAC), lr_decay_epochs=0,
                        batch=self.batch, delay=self.delay, seed=[self.seed_, k, epoch],
                        width=width, w0=words[k])
            words[k] = res.words
            losses.append(res.loss_curve[-1])
            _add_stats(stats, res.stats, before, _device_figures(device))
        saturated = stats["saturated_rows"] - self.hw_stats_["saturated_rows"]
        self.model_words_, self.hw_stats_ = words, stats
        self.n_iter_ += 1
        self.loss_curve_.append(float(np.mean(losses)))
        return saturated

    def _model_floats(self):
        """Each model in user units: ``(coef, intercept)`` per model."""
        w = self.model_words_.astype(np.float64) / (1 << contract.MODEL_FRAC)
        return [unscale_model(wk, self._features, self._labels, self.format_.top) for wk in w]

    def _decision(self, X):
        check_is_fitted(self, "model_words_")
        X = self._validate_X(X, reset=False)
        return X @ np.atleast_2d(self.coef_).T + self.intercept_


_PARAMS_DOC = """
    device : str or device object, default="golden"
        Where to train: a name for :func:`zipml.host.devices.open_device` or an opened device
        (anything with the golden model's command methods).
    bits : int, default=4
        Bits per sample, 1..8 (ignored by ``encoding="raw"``).
    encoding : {"compact", "pair", "single", "raw"}, default="compact"
        Field encoding: ``pair`` and ``compact`` carry the same double samples (the same seed
        gives the same model; compact moves fewer bits), ``single`` is the naive biased scheme,
        ``raw`` 32-bit fixed point.
    rounding : {"stochastic", "nearest"}, default="stochastic"
    levels : {"uniform", "optimal"}, default="uniform"
        ``optimal``: variance-optimal level table computed from the training data (bits >= 2).
    signed : bool, default=True
        Scale features onto [-1, 1] (True) or [0, 1] (False).
    epochs : int, default=10
        Epochs run by ``fit`` (``partial_fit`` runs one).
    lr : float, default=1/32
        Learning rate in (0, 1), rounded to the device's 24-bit fixed point.
    lr_decay_epochs : int, default=0
        Halve the learning rate every this many epochs (0: never).
    batch : int, default=1
        Mini-batch size.
    delay : {0, 1}, default=0
        1: a batch's dot products see the model one batch late (hides pipeline latency).
    width : int or None, default=None
        Word width W of the device; None uses the device's (128 for a named device).
    random_state : int, RandomState or None, default=0
        Seed of the sample stream; the same int gives the same model words on every device.
    warm_start : bool, default=False
        ``fit`` continues from the current model words, scaling, level table, epoch count and
        sample stream instead of starting over.
    verbose : int, default=0
        Report the loss after each epoch: a tqdm bar when stderr is a terminal, lines otherwise.
"""

_ATTRS_DOC = """
    model_words_ : int32 ndarray (n_models, n_features_in_ + 1)
        The device's model words (24 fractional bits, level space, bias last).
    n_iter_ : int
        Epochs trained since the model was started.
    loss_curve_ : list of float
        Training objective (scaled units, full-precision data) after each epoch.
    seed_ : int
        The seed of the sample stream (``random_state`` resolved).
    format_ : zipml.contract.Format
        The sample format trained with.
    levels_table_ : tuple of int or None
        The level table loaded on the device (``levels="optimal"``).
    hw_stats_ : dict
        Hardware figures of the whole epochs trained: ``rows``, ``epochs`` (one per model per
        epoch), ``bytes_moved``, ``saturated_rows``, ``row_words``, and any other count the
        device reports in its ``counters`` or ``stats`` (cycles, retries).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
"""


def _doc(cls):
    cls.__doc__ = (cls.__doc__.replace("{params}", _PARAMS_DOC.strip("\n"))
                   .replace("{attrs}", _ATTRS_DOC.strip("\n")))
    return cls


@_doc
class ZipMLRegressor(RegressorMixin, _ZipMLBase):
    """Linear least-squares regression trained by low-precision SGD on a ZipML device.

    Parameters
    ----------
{params}

    Attributes
    ----------
    coef_ : ndarray (n_features_in_,)
        Coefficients in the user's units.
    intercept_ : float
{attrs}
    """

    def __init__(self, *, device="golden", bits=4, encoding="compact", rounding="stochastic",
                 levels="uniform", signed=True, epochs=10, lr=1 / 32, lr_decay_epochs=0,
                 batch=1, delay=0, width=None, random_state=0, warm_start=False, verbose=0):
        self.device = device
        self.bits = bits
        self.encoding = encoding
        self.rounding = rounding
        self.levels = levels
        self.signed = signed
        self.epochs = epochs
        self.lr = lr
        self.lr_decay_epochs = lr_decay_epochs
        self.batch = batch
        self.delay = delay
        self.width = width
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    def _n_models(self):
        return 1

    def _model_targets(self, ys, k):
        return ys

    def _validate_targets(self, X, y, *, reset, classes, incremental, continuing):
        return self._validate_Xy(X, y, reset, y_numeric=True)

    def _set_model(self):
        (coef, intercept), = self._model_floats()
        self.coef_, self.intercept_ = coef, intercept

    def fit(self, X, y):
        """Train ``epochs`` epochs on (X, y); return self.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
        y : array-like (n_samples,)
        """
        return self._fit(X, y, epochs=self.epochs, incremental=False)

    def partial_fit(self, X, y):
        """Train one epoch on (X, y), continuing from the current model; return self.

        The first call fits the feature and label scaling; later calls reuse it (values outside
        the first call's range are clipped).
        """
        return self._fit(X, y, epochs=1, incremental=True)

    def predict(self, X):
        """Predictions ``X @ coef_ + intercept_`` in the user's units."""
        return self._decision(X)[:, 0]


@_doc
class ZipMLClassifier(ClassifierMixin, _ZipMLBase):
    """Linear classifier trained by low-precision SGD on a ZipML device.

    Two classes train one model (``classes_[1]`` is the positive class); more train one
    model per class, one-vs-rest.

    Parameters
    ----------
    loss : {"logistic", "hinge"}, default="logistic"
        ``logistic`` also gives :meth:`predict_proba`.
{params}

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    coef_ : ndarray (n_models, n_features_in_)
        Coefficients in margin units (one row for two classes).
    intercept_ : ndarray (n_models,)
{attrs}
    """

    def __init__(self, *, loss="logistic", device="golden", bits=4, encoding="compact",
                 rounding="stochastic", levels="uniform", signed=True, epochs=10, lr=1 / 32,
                 lr_decay_epochs=0, batch=1, delay=0, width=None, random_state=0,
                 warm_start=False, verbose=0):
        self.loss = loss
        self.device = device
        self.bits = bits
        self.encoding = encoding
        self.rounding = rounding
        self.levels = levels
        self.signed = signed
        self.epochs = epochs
        self.lr = lr
        self.lr_decay_epochs = lr_decay_epochs
        self.batch = batch
        self.delay = delay
        self.width = width
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose

    def _loss(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, not {self.loss!r}")
        return LOSSES[self.loss]

    def _check_params(self):
        self._loss()
        return super()._check_params()

    def _n_models(self):
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _model_targets(self, codes, k):
        positive = 1 if len(self.classes_) == 2 else k
        return np.where(codes == positive, 1.0, -1.0)

    def _validate_targets(self, X, y, *, reset, classes, incremental, continuing):
        X, y = self._validate_Xy(X, y, reset)
        check_classification_targets(y)
        if not continuing:
            if incremental and classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit "
                                 "(all labels the model will ever see)")
            found = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if len(found) < 2:
                raise ValueError(f"{type(self).__name__} needs at least two classes in y, "
                                 f"found one class: {found[0]!r}")
            self.classes_ = found
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first call "
                             f"to partial_fit, {self.classes_!r}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y has labels {unknown!r} not in classes_ {self.classes_!r}")
        return X, np.searchsorted(self.classes_, y)

    def _set_model(self):
        models = self._model_floats()
        self.coef_ = np.array([c for c, _ in models])
        self.intercept_ = np.array([b for _, b in models])

    def fit(self, X, y):
        """Train ``epochs`` epochs on (X, y); return self.

        Parameters
        ----------
        X : array-like or sparse matrix (n_samples, n_features)
        y : array-like (n_samples,)
            Class labels: two or more distinct values of any kind.
        """
        return self._fit(X, y, epochs=self.epochs, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """Train one epoch on (X, y), continuing from the current model; return self.

        Parameters
        ----------
        classes : array-like, optional
            All labels; required on the first call. The first call also fits the feature
            scaling; later calls reuse it.
        """
        return self._fit(X, y, epochs=1, incremental=True, classes=classes)

    def decision_function(self, X):
        """Margins: shape (n_samples,) for two classes, (n_samples, n_classes) otherwise."""
        d = self._decision(X)
        return d[:, 0] if d.shape[1] == 1 else d

    def predict(self, X):
        """The class of the largest margin (two classes: ``classes_[1]`` where it is > 0)."""
        d = self.decision_function(X)
        idx = (d > 0).astype(int) if d.ndim == 1 else d.argmax(axis=1)
        return self.classes_[idx]

    def _has_proba(self):
        return self.loss == "logistic"

    @available_if(_has_proba)
    def predict_proba(self, X):
        """Class probabilities (logistic loss only): the sigmoid of the margins, normalized
        over the classes for one-vs-rest."""
        d = self.decision_function(X)
        p = expit(d)
        if d.ndim == 1:
            return np.column_stack([1.0 - p, p])
        total = p.sum(axis=1, keepdims=True)
        return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])

    @available_if(_has_proba)
    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
