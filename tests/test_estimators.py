"""The scikit-learn estimators on the golden device: API conventions, quality, reproducibility."""

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score, train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from zipml import ZipMLClassifier, ZipMLRegressor
from zipml.sim.golden import GoldenDevice

# Every scikit-learn check passes on the golden device; a check that cannot apply would be
# listed here with its reason (sklearn 1.9: ``expected_failed_checks``).
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(
    [ZipMLRegressor(), ZipMLClassifier(), ZipMLClassifier(loss="hinge"),
     ZipMLRegressor(encoding="raw", rounding="nearest", batch=4, delay=1),
     ZipMLClassifier(encoding="pair", bits=2, signed=False, lr_decay_epochs=3)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer(return_X_y=True)


# --- quality ----------------------------------------------------------------------------------

def test_regressor_learns_diabetes(diabetes):
    X, y = diabetes
    # Ordinary least squares reaches 0.48 in the same 5-fold cross validation.
    assert cross_val_score(ZipMLRegressor(), X, y, cv=5).mean() > 0.4
    model = ZipMLRegressor().fit(X, y)
    assert model.score(X, y) > 0.45
    np.testing.assert_allclose(model.predict(X), X @ model.coef_ + model.intercept_)


@pytest.mark.parametrize("loss", ["logistic", "hinge"])
def test_classifier_learns_breast_cancer(cancer, loss):
    X, y = cancer
    assert cross_val_score(ZipMLClassifier(loss=loss), X, y, cv=5).mean() > 0.9


def test_classifier_one_vs_rest_on_digits():
    X, y = load_digits(return_X_y=True)
    Xa, Xb, ya, yb = train_test_split(X, y, random_state=0, stratify=y)
    model = ZipMLClassifier(epochs=3).fit(Xa, ya)
    assert model.score(Xb, yb) > 0.9
    assert model.coef_.shape == (10, 64) and model.model_words_.shape == (10, 65)
    proba = model.predict_proba(Xb)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(Xb))
    assert model.hw_stats_["epochs"] == 3 * 10
    assert model.hw_stats_["rows"] == 3 * 10 * len(ya)


def test_string_labels_binary(cancer):
    X, y = cancer
    names = np.array(["benign", "malignant"])[1 - y]
    model = ZipMLClassifier(epochs=3).fit(X, names)
    assert list(model.classes_) == ["benign", "malignant"]
    assert model.coef_.shape == (1, X.shape[1]) and model.intercept_.shape == (1,)
    assert model.decision_function(X).shape == (len(X),)
    assert model.score(X, names) > 0.9


# --- reproducibility ----------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: ZipMLRegressor(bits=2, lr_decay_epochs=2, batch=8, delay=1),
    lambda: ZipMLClassifier(bits=3, lr_decay_epochs=1),
])
def test_fit_equals_repeated_partial_fit(diabetes, make):
    X, y = diabetes
    if isinstance(make(), ZipMLClassifier):
        y = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))          # three classes: OvR
    epochs = 4
    whole = make().set_params(epochs=epochs).fit(X, y)
    parts = make()
    for _ in range(epochs):
        kwargs = {"classes": np.unique(y)} if isinstance(parts, ZipMLClassifier) else {}
        parts.partial_fit(X, y, **kwargs)
    np.testing.assert_array_equal(whole.model_words_, parts.model_words_)
    np.testing.assert_array_equal(whole.coef_, parts.coef_)
    assert whole.n_iter_ == parts.n_iter_ == epochs
    assert whole.loss_curve_ == parts.loss_curve_
    assert whole.hw_stats_ == parts.hw_stats_


def test_interrupted_fit_resumed_with_warm_start(diabetes):
    X, y = diabetes
    whole = ZipMLRegressor(epochs=5, lr_decay_epochs=2).fit(X, y)
    resumed = ZipMLRegressor(epochs=2, lr_decay_epochs=2).fit(X, y)
    resumed.set_params(warm_start=True, epochs=3).fit(X, y)
    np.testing.assert_array_equal(whole.model_words_, resumed.model_words_)
    # Without warm start, fit starts over.
    again = resumed.set_params(warm_start=False, epochs=5).fit(X, y)
    np.testing.assert_array_equal(whole.model_words_, again.model_words_)


class Unplugged(Exception):
    pass


class FlakyDevice(GoldenDevice):
    """The golden device, unplugged during its ``fail_at``-th stream."""

    def __init__(self, fail_at, **kwargs):
        super().__init__(**kwargs)
        self.fail_at, self.calls = fail_at, 0

    def process(self, words):
        self.calls += 1
        if self.calls == self.fail_at:
            raise Unplugged("cable pulled")
        return super().process(words)


def test_interrupted_fit_resumed_with_partial_fit(diabetes):
    X, y = diabetes
    y = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))     # OvR: three device runs per epoch
    whole = ZipMLClassifier(epochs=4).fit(X, y)
    # Unplugged in the middle of epoch 3 (the 8th of 12 streams): the estimator keeps the
    # state after epoch 2, and two more epochs reach the uninterrupted model.
    broken = ZipMLClassifier(epochs=4, device=FlakyDevice(fail_at=8))
    with pytest.raises(Unplugged):
        broken.fit(X, y)
    assert broken.n_iter_ == 2 and len(broken.loss_curve_) == 2
    assert broken.hw_stats_["epochs"] == 2 * 3
    broken.set_params(device="golden")
    broken.partial_fit(X, y).partial_fit(X, y)
    np.testing.assert_array_equal(whole.model_words_, broken.model_words_)
    np.testing.assert_array_equal(whole.coef_, broken.coef_)
    assert whole.hw_stats_ == broken.hw_stats_


def test_pickled_model_resumes_identically(diabetes):
    X, y = diabetes
    a = ZipMLRegressor().partial_fit(X, y)
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(a.partial_fit(X, y).model_words_,
                                  b.partial_fit(X, y).model_words_)


@pytest.mark.parametrize("bits", [1, 3, 4])
def test_pair_and_compact_give_the_same_model(diabetes, bits):
    X, y = diabetes
    pair = ZipMLRegressor(encoding="pair", bits=bits, epochs=3, random_state=7).fit(X, y)
    compact = ZipMLRegressor(encoding="compact", bits=bits, epochs=3, random_state=7).fit(X, y)
    np.testing.assert_array_equal(pair.model_words_, compact.model_words_)
    assert compact.hw_stats_["bytes_moved"] <= pair.hw_stats_["bytes_moved"]


def test_random_state_changes_the_samples(diabetes):
    X, y = diabetes
    a = ZipMLRegressor(epochs=2, random_state=1).fit(X, y)
    b = ZipMLRegressor(epochs=2, random_state=2).fit(X, y)
    assert not np.array_equal(a.model_words_, b.model_words_)
    assert ZipMLRegressor(epochs=1, random_state=None).fit(X, y).seed_ >= 0


def test_device_object_and_width(diabetes):
    X, y = diabetes
    named = ZipMLRegressor(epochs=2, width=64).fit(X, y)
    given = ZipMLRegressor(epochs=2, device=GoldenDevice(width=64)).fit(X, y)
    np.testing.assert_array_equal(named.model_words_, given.model_words_)
    assert given.hw_stats_["row_words"] == 2


def test_optimal_levels(diabetes):
    pytest.importorskip("zipml.host.levels")
    X, y = diabetes
    model = ZipMLRegressor(levels="optimal", bits=3, epochs=3).fit(X, y)
    assert len(model.levels_table_) == 8
    assert model.score(X, y) > 0.4


# --- hardware figures and warnings ----------------------------------------------------------

def test_hw_stats_and_saturation_warning(diabetes):
    X, y = diabetes
    model = ZipMLRegressor(epochs=2).fit(X, y)
    stats = model.hw_stats_
    assert stats["rows"] == 2 * len(X) and stats["epochs"] == 2
    assert stats["saturated_rows"] == 0
    assert stats["bytes_moved"] == 2 * len(X) * stats["row_words"] * 128 // 8
    with pytest.warns(UserWarning, match="saturated.*lower lr"):
        model = ZipMLRegressor(lr=0.9, epochs=3).fit(X, y)
    assert model.hw_stats_["saturated_rows"] > 0


def test_hw_stats_count_each_epochs_link_traffic_once(diabetes):
    """The link's running totals enter hw_stats_ as each epoch's share, not summed again."""
    from zipml.host.devices import open_device
    X, y = diabetes
    frames, sent = [], []
    for epochs in (1, 3):
        with open_device("inproc", width=128, n_max=16) as client:
            start = client.stats["bytes_sent"]
            model = ZipMLRegressor(device=client, epochs=epochs).fit(X, y)
            assert model.hw_stats_["bytes_sent"] <= client.stats["bytes_sent"] - start
            frames.append(model.hw_stats_["frames_sent"])
            sent.append(model.hw_stats_["bytes_sent"])
            assert model.hw_stats_["retries"] == 0
    assert frames[0] > 0 and frames[1] == 3 * frames[0]
    # the same frames each epoch; only the escaping of the model words differs
    assert sent[1] == pytest.approx(3 * sent[0], rel=0.01)


def test_verbose_reports_epochs(diabetes, capsys):
    X, y = diabetes
    model = ZipMLRegressor(epochs=2, verbose=1).fit(X, y)
    err = capsys.readouterr().err          # not a terminal: plain lines, no bar
    assert "epoch    2" in err
    assert len(model.loss_curve_) == 2


# --- validation before any device call ------------------------------------------------------

class UntouchableDevice:
    """A device that fails the test if any command reaches it."""
    width, n_max, batch_max = 128, 8, 16

    def _called(self, *args, **kwargs):
        raise AssertionError("the device was called")

    configure = load_levels = load_model = process = read_model = close = _called


GOOD_X = np.arange(12.0).reshape(6, 2) % 5
GOOD_Y = np.array([0.0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("params, X, y, message", [
    ({}, [[1.0, np.nan], [2, 3]], [1, 2], "NaN at row 0, column 1"),
    ({}, [[1.0, 2], [np.inf, 3]], [1, 2], "inf at row 1, column 0"),
    ({}, [1.0, 2, 3], [1, 2, 3], "2D array"),
    ({}, GOOD_X, GOOD_Y[:4], "inconsistent numbers of samples"),
    ({}, np.zeros((0, 2)), [], "0 sample"),
    ({}, GOOD_X, [1, 2, np.nan, 4, 5, 6], "NaN"),
    ({}, np.ones((6, 8)), GOOD_Y, "at most 7 features"),
    ({"bits": 9}, GOOD_X, GOOD_Y, "bits must be an integer from 1 to 8"),
    ({"bits": 0}, GOOD_X, GOOD_Y, "bits must be"),
    ({"encoding": "quad"}, GOOD_X, GOOD_Y, "encoding must be one of"),
    ({"rounding": "up"}, GOOD_X, GOOD_Y, "rounding must be one of"),
    ({"levels": "optimal", "bits": 1}, GOOD_X, GOOD_Y, "needs bits >= 2"),
    ({"lr": 1.5}, GOOD_X, GOOD_Y, "learning rate"),
    ({"epochs": 0}, GOOD_X, GOOD_Y, "epochs must be"),
    ({"delay": 2}, GOOD_X, GOOD_Y, "delay must be 0 or 1"),
    ({"batch": 64}, GOOD_X, GOOD_Y, "largest mini-batch"),
    ({"width": 64}, GOOD_X, GOOD_Y, "width=64"),
    ({"width": 48}, GOOD_X, GOOD_Y, "width must be"),
])
def test_bad_input_fails_before_the_device(params, X, y, message):
    model = ZipMLRegressor(device=UntouchableDevice(), **params)
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


@pytest.mark.parametrize("params, y, message", [
    ({}, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "Unknown label type"),
    ({}, [1, 1, 1, 1, 1, 1], "one class"),
    ({"loss": "squared"}, GOOD_Y, "loss must be one of"),
])
def test_bad_labels_fail_before_the_device(params, y, message):
    model = ZipMLClassifier(device=UntouchableDevice(), **params)
    with pytest.raises(ValueError, match=message):
        model.fit(GOOD_X, y)


def test_partial_fit_checks_classes_and_features():
    model = ZipMLClassifier(device=UntouchableDevice())
    with pytest.raises(ValueError, match="classes must be passed"):
        model.partial_fit(GOOD_X, GOOD_Y)
    fitted = ZipMLClassifier().partial_fit(GOOD_X, GOOD_Y, classes=[0, 1, 2])
    fitted.device = UntouchableDevice()
    with pytest.raises(ValueError, match=r"not in classes_"):
        fitted.partial_fit(GOOD_X, GOOD_Y + 5)
    with pytest.raises(ValueError, match="features"):
        fitted.partial_fit(np.ones((6, 3)), GOOD_Y)
    with pytest.raises(ValueError, match="same bits"):
        fitted.set_params(bits=2).partial_fit(GOOD_X, GOOD_Y)


def test_unknown_device_name():
    with pytest.raises(ValueError, match="unknown device"):
        ZipMLRegressor(device="fpga9").fit(GOOD_X, GOOD_Y)


# --- parameters and state ---------------------------------------------------------------------

def test_get_set_params_round_trip():
    model = ZipMLClassifier(loss="hinge", bits=2, encoding="pair", epochs=3)
    params = model.get_params()
    assert params["loss"] == "hinge" and params["bits"] == 2 and params["device"] == "golden"
    other = ZipMLClassifier().set_params(**params)
    assert other.get_params() == params
    assert clone(model).get_params() == params
    assert set(ZipMLRegressor().get_params()) == set(params) - {"loss"}


def test_init_only_stores_parameters():
    # Nothing is validated or opened in __init__: errors come from fit.
    model = ZipMLRegressor(device="nonsense", bits=99)
    assert model.bits == 99
    assert not [k for k in vars(model) if k.endswith("_")]


@pytest.mark.parametrize("method", ["predict", "score"])
def test_regressor_not_fitted(method):
    with pytest.raises(NotFittedError):
        getattr(ZipMLRegressor(), method)(*([GOOD_X, GOOD_Y] if method == "score" else [GOOD_X]))


@pytest.mark.parametrize("method", ["predict", "decision_function", "predict_proba"])
def test_classifier_not_fitted(method):
    with pytest.raises(NotFittedError):
        getattr(ZipMLClassifier(), method)(GOOD_X)


def test_predict_proba_only_for_logistic(cancer):
    X, y = cancer
    assert hasattr(ZipMLClassifier(), "predict_proba")
    assert not hasattr(ZipMLClassifier(loss="hinge"), "predict_proba")
    model = ZipMLClassifier(epochs=2).fit(X, y)
    proba = model.predict_proba(X)
    np.testing.assert_array_equal(proba[:, 1] > 0.5, model.predict(X) == 1)


def test_import_zipml_stays_light():
    code = "import sys, zipml; assert 'sklearn' not in sys.modules; print(zipml.ZipMLRegressor)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "ZipMLRegressor" in out


class CountingDevice(GoldenDevice):
    """The golden device, also keeping running link totals the way a board's client does
    (here: one retry and 1000 cycles per configuration)."""

    stats = None

    def configure(self, config):
        super().configure(config)
        old = self.stats or {"retries": 0, "cycles": 0}
        self.stats = {"retries": old["retries"] + 1, "cycles": old["cycles"] + 1000}


def test_hw_stats_include_what_the_device_reports(diabetes):
    X, y = diabetes
    model = ZipMLRegressor(epochs=3, device=CountingDevice()).fit(X, y)
    assert model.hw_stats_["retries"] == 3 and model.hw_stats_["cycles"] == 3000


def test_verbose_on_a_terminal_shows_a_progress_bar(diabetes, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    X, y = diabetes
    monkeypatch.setattr(sys, "stderr", Terminal())
    ZipMLRegressor(epochs=2, verbose=1).fit(X, y)
    shown = sys.stderr.getvalue()
    assert "ZipMLRegressor" in shown and "2/2" in shown
