"""Training on a device: prepare the data, stream fresh samples every epoch, collect snapshots.

The device is anything with the golden model's command methods (``configure``,
``load_levels``, ``load_model``, ``process``, ``read_model``, ``counters``): the golden model
itself, the protocol client talking to a board or to its simulation. Every device given the same
arguments returns the same model words.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.host.quantize import encode, encode_labels
from zipml.host.scaling import FeatureScaler, LabelScaler, add_bias, check_xy, unscale_model
from zipml.sim.golden import TrainConfig

__all__ = ["Problem", "TrainResult", "prepare", "train", "objective", "lr_to_fixed"]

ONE = 1 << contract.MODEL_FRAC
DEFAULT_FORMAT = Format(Encoding.PAIR, 4)


def lr_to_fixed(lr):
    """A learning rate as the device's unsigned fixed-point integer; clear error if it cannot."""
    fixed = int(round(lr * (1 << contract.LR_FRAC)))
    if not 0 < fixed < (1 << contract.LR_BITS):
        raise ValueError(f"learning rate {lr} is outside the device's range "
                         f"[2**-{contract.LR_FRAC}, 1)")
    return fixed


@dataclass
class Problem:
    """A data set scaled for the device: level-space features and fixed-point labels.

    Members
    -------
    xs : float array (N, n)
        Features scaled to [-1, 1] (or [0, 1]) with the bias column of ones appended.
    y : float array (N,)
        Labels scaled to [-1, 1] (regression) or -1/+1 (classification).
    """
    xs: np.ndarray
    y: np.ndarray
    features: FeatureScaler
    labels: LabelScaler | None

    @property
    def n_features(self):
        return self.xs.shape[1]


def prepare(X, y, *, loss=Loss.SQUARED, signed=True, max_features=None):
    """Validate and scale (X, y); classification labels must be two classes, mapped to -1/+1."""
    X, y = check_xy(X, y, max_features=None if max_features is None else max_features - 1)
    features = FeatureScaler(signed=signed).fit(X)
    xs = add_bias(features.transform(X), 1.0)
    if Loss(loss) == Loss.SQUARED:
        labels = LabelScaler().fit(y)
        ys = labels.transform(y)
    else:
        classes = np.unique(y)
        if len(classes) != 2:
            raise ValueError(f"binary classification needs two classes, found {len(classes)}")
        labels, ys = None, np.where(y == classes[1], 1.0, -1.0)
    return Problem(xs, ys, features, labels)


def objective(xv, y, w, loss):
    """The training loss of float model ``w`` on full-precision level-space rows ``xv``."""
    margin = xv @ w
    loss = Loss(loss)
    if loss == Loss.SQUARED:
        return float(0.5 * np.mean((margin - y) ** 2))
    if loss == Loss.LOGISTIC:
        return float(np.mean(np.logaddexp(0.0, -y * margin)))
    return float(np.mean(np.maximum(0.0, 1.0 - y * margin)))


@dataclass
class TrainResult:
    """What a training run returns."""
    words: np.ndarray                     # final model words (int32, feature order)
    snapshots: list                       # model words after each epoch
    loss_curve: list                      # objective before training and after each epoch
    w: np.ndarray                         # final model, float, level space
    coef: np.ndarray                      # final model in the user's units
    intercept: float
    stats: dict = field(default_factory=dict)

    def to_json(self):
        return {"loss_curve": self.loss_curve, "coef": self.coef.tolist(),
                "intercept": float(self.intercept),
                "model_words": [int(x) for x in self.words],
                "snapshots": [[int(x) for x in s] for s in self.snapshots],
                "stats": self.stats}


def train(device, problem, *, fmt=DEFAULT_FORMAT, loss=Loss.SQUARED, rounding="stochastic",
          table=None, epochs=10, lr=1 / 32, lr_decay_epochs=0, batch=1, delay=0, seed=0,
          width=None, w0=None, progress=None):
    """Train on ``device``: fresh samples every epoch from a numpy Generator seeded with ``seed``.

    Parameters
    ----------
    device
        A device with the golden model's command methods and a ``width`` attribute.
    table : tuple of int, optional
        Level table for ``LevelMode.TABLE`` formats.
    w0 : int array, optional
        Initial model words (warm start); zeros otherwise.
    progress : callable, optional
        Called with the epoch number after each epoch.
    """
    width = width or device.width
    loss = Loss(loss)
    cfg = TrainConfig(n_features=problem.n_features, rows_per_epoch=len(problem.y), fmt=fmt,
                      loss=loss, lr=lr_to_fixed(lr), lr_decay_epochs=lr_decay_epochs,
                      batch=batch, delay=delay)
    device.configure(cfg)
    if fmt.levels == LevelMode.TABLE and fmt.encoding != Encoding.RAW:
        device.load_levels(table)
    if w0 is not None:
        device.load_model(w0)
    rng = np.random.default_rng(seed)
    xv = problem.xs * fmt.top
    labels = encode_labels(problem.y)
    curve = [objective(xv, problem.y, _to_float(device.read_model()), loss)]
    snapshots = []
    bytes_moved = 0
    for epoch in range(epochs):
        fields = encode(xv, fmt, rounding, rng, table=table)
        words = pack_rows(fields, labels, width, fmt)
        bytes_moved += words.nbytes
        snaps = device.process(words)
        snapshots.extend(snaps)
        curve.append(objective(xv, problem.y, _to_float(snaps[-1]), loss))
        if progress:
            progress(epoch)
    final = np.asarray(device.read_model(), np.int32)
    w = _to_float(final)
    coef, intercept = unscale_model(w, problem.features, problem.labels, fmt.top)
    counters = device.counters
    stats = {"rows": counters.rows, "epochs": counters.epochs,
             "saturated_rows": counters.saturated_rows, "bytes_moved": bytes_moved,
             "row_words": contract.row_words(width, fmt, problem.n_features),
             "config": {k: (int(v) if isinstance(v, int) else str(v))
                        for k, v in asdict(cfg).items() if k != "fmt"}}
    return TrainResult(final, snapshots, curve, w, coef, intercept, stats)


def _to_float(words):
    return np.asarray(words, np.float64) / ONE
