"""The golden model: a bit-exact numpy model of the device's training pipeline.

It consumes exactly what the hardware consumes (packed W-bit words and a configuration) and
returns exactly what the hardware reports (model words, per-epoch snapshots, counters). The
arithmetic is section 4 of ``docs/NUMERICS.md``; every width and format comes from
:mod:`zipml.contract`.
"""

from dataclasses import dataclass, field

import numpy as np

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import unpack_rows
from zipml.host.quantize import decode

__all__ = ["TrainConfig", "Counters", "GoldenDevice", "DeviceError", "lr_for_epoch"]

_MODEL_MIN, _MODEL_MAX = contract.sat_limits(contract.MODEL_BITS)
_SCALAR_MIN, _SCALAR_MAX = contract.sat_limits(contract.SCALAR_BITS)
_G_MIN, _G_MAX = contract.sat_limits(contract.MODEL_BITS)
_ONE = 1 << contract.MODEL_FRAC
# c = round(g * lr / 2**_C_SHIFT) puts c in SCALAR_FRAC fractional bits.
_C_SHIFT = contract.MODEL_FRAC + contract.LR_FRAC - contract.SCALAR_FRAC
# The sigmoid index is floor(margin / 2**_SIG_SHIFT) + entries / 2.
_SIG_SHIFT = contract.MODEL_FRAC - contract.SIGMOID_STEP_LOG2
# delta = round(c * v / 2**(_DELTA_SHIFT + f)) puts the update in MODEL_FRAC fractional bits.
_DELTA_SHIFT = contract.SCALAR_FRAC - contract.MODEL_FRAC
_SIGMOID = np.array(contract.sigmoid_table(), dtype=np.int64)


class DeviceError(ValueError):
    """A configuration or command the device rejects (the hardware answers with an error)."""


@dataclass(frozen=True)
class TrainConfig:
    """Run-time configuration of a training run.

    Parameters
    ----------
    n_features : int
        n, features per row including the bias column.
    rows_per_epoch : int
        N, rows in one epoch.
    fmt : Format
        Sample format.
    loss : Loss
    lr : int
        Learning rate, unsigned with ``contract.LR_FRAC`` fractional bits.
    lr_decay_epochs : int
        The learning rate halves every this many epochs; 0 keeps it constant.
    batch : int
        B, rows per mini-batch.
    delay : int
        0: a batch's dot products use the model after the previous batch; 1: after the one
        before (lets the hardware overlap updates with the next batch).
    """
    n_features: int
    rows_per_epoch: int
    fmt: Format = Format()
    loss: Loss = Loss.SQUARED
    lr: int = 1 << (contract.LR_FRAC - 6)
    lr_decay_epochs: int = 0
    batch: int = 1
    delay: int = 0

    def __post_init__(self):
        object.__setattr__(self, "loss", Loss(self.loss))

    def check(self, n_max, batch_max=None):
        """Raise :class:`DeviceError` naming the first field the device would reject."""
        if not 1 <= self.n_features <= n_max:
            raise DeviceError(f"n_features={self.n_features} is outside 1..{n_max}")
        if self.rows_per_epoch < 1:
            raise DeviceError("rows_per_epoch must be at least 1")
        if not 0 < self.lr < (1 << contract.LR_BITS):
            raise DeviceError(f"lr={self.lr} is outside 1..{(1 << contract.LR_BITS) - 1}")
        if self.lr_decay_epochs < 0:
            raise DeviceError("lr_decay_epochs must not be negative")
        if self.batch < 1 or (batch_max is not None and self.batch > batch_max):
            raise DeviceError(f"batch={self.batch} is outside 1..{batch_max}")
        if self.delay not in (0, 1):
            raise DeviceError(f"delay must be 0 or 1, not {self.delay}")


@dataclass
class Counters:
    """What the device counts: rows processed, epochs completed, rows that saturated."""
    rows: int = 0
    epochs: int = 0
    saturated_rows: int = 0


def lr_for_epoch(lr, decay_epochs, epoch):
    """The learning rate in force during ``epoch`` (0-based): halved every ``decay_epochs``."""
    return lr if decay_epochs == 0 else lr >> (epoch // decay_epochs)


def _dot_floor(w, v, frac):
    """floor(sum(w * v) / 2**frac) per row, exact for 32-bit w and v of up to 32 bits.

    Parameters
    ----------
    w : int64 array (n,)
    v : int64 array (rows, n)
    """
    if np.abs(v).max(initial=0) < (1 << 16):
        # |w * v| < 2**47, so sums of up to 2**15 terms (n_max <= 8192) stay below 2**62.
        return (v @ w) >> frac
    # 32-bit samples: split w = hi * 2**16 + lo and recombine without overflow.
    lo, hi = w & 0xFFFF, w >> 16
    s_lo, s_hi = v @ lo, v @ hi
    assert frac >= 16
    return (s_hi + (s_lo >> 16)) >> (frac - 16)


def _gradient_scalar(loss, d, y):
    """g per row (int64, MODEL_FRAC fractional bits) and whether it saturated."""
    if loss == Loss.SQUARED:
        raw = d - y
        g = np.clip(raw, _G_MIN, _G_MAX)
        return g, g != raw
    s = np.where(y > 0, 1, -1)
    if loss == Loss.LOGISTIC:
        idx = np.clip((-s * d >> _SIG_SHIFT) + contract.SIGMOID_ENTRIES // 2,
                      0, contract.SIGMOID_ENTRIES - 1)
        g = -s * _SIGMOID[idx]
    elif loss == Loss.HINGE:
        g = np.where(s * d < _ONE, -s * _ONE, 0)
    else:
        raise DeviceError(f"unknown loss {loss!r}")
    return g, np.zeros(g.shape, bool)


@dataclass
class GoldenDevice:
    """The device, in numpy.

    Parameters
    ----------
    width : int
        W, bits per stream word.
    n_max : int
        Largest feature count the device holds a model for.
    batch_max : int
        Largest mini-batch.

    Members
    -------
    config : TrainConfig or None
    model : int64 array (n_features,)
        The working model words.
    table : tuple of int or None
        The loaded level table.
    counters : Counters
    """
    width: int = 128
    n_max: int = 1024
    batch_max: int = 256
    config: TrainConfig | None = None
    model: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    table: tuple | None = None
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self):
        if self.width not in contract.WORD_WIDTHS:
            raise DeviceError(f"width {self.width} is not one of {contract.WORD_WIDTHS}")

    # --- commands ------------------------------------------------------------------------------

    def configure(self, config):
        """Accept a configuration; clears the model (its layout depends on the format)."""
        config.check(self.n_max, self.batch_max)
        self.config = config
        self.model = np.zeros(config.n_features, np.int64)
        self.counters = Counters()
        self._rows_in_epoch = 0
        self._pending = np.zeros((0, self.width // 32), np.uint32)

    def load_model(self, words):
        """Load model words (signed 32-bit, feature order)."""
        self._need_config()
        words = np.asarray(words, dtype=np.int64).reshape(-1)
        if words.shape != (self.config.n_features,):
            raise DeviceError(f"model has {words.size} words, expected {self.config.n_features}")
        if words.min(initial=0) < _MODEL_MIN or words.max(initial=0) > _MODEL_MAX:
            raise DeviceError("model words must be signed 32-bit integers")
        self.model = words.copy()

    def read_model(self):
        """The working model words (int32, feature order)."""
        return self.model.astype(np.int32)

    def load_levels(self, table):
        """Load a level table (for ``LevelMode.TABLE``)."""
        table = tuple(int(t) for t in table)
        if not 4 <= len(table) <= 1 << contract.MAX_BITS or len(table) & (len(table) - 1):
            raise DeviceError(f"a level table has 2**b entries (b >= 2), not {len(table)}")
        if any(abs(t) > contract.TABLE_MAX for t in table):
            raise DeviceError(f"level table entries must lie within ±{contract.TABLE_MAX}")
        if any(a >= b for a, b in zip(table, table[1:])):
            raise DeviceError("level table entries must be strictly increasing")
        self.table = table

    def process(self, words):
        """Train on a stream of packed rows; return the model snapshots of epochs completed.

        ``words`` is a uint32 array (rows * R, W // 32). Epochs end every ``rows_per_epoch`` rows;
        a call may stop mid-epoch and the next call continues it, as a stream would.
        """
        cfg = self._need_config()
        fmt = cfg.fmt
        table = None
        if fmt.levels == LevelMode.TABLE and fmt.encoding != Encoding.RAW:
            if self.table is None or len(self.table) != fmt.n_levels:
                raise DeviceError(f"format needs a loaded table of {fmt.n_levels} levels")
            table = self.table
        # A stream may stop mid-row: keep the partial row until the rest arrives.
        words = np.concatenate([self._pending, np.asarray(words, np.uint32)])
        r = contract.row_words(self.width, fmt, cfg.n_features)
        whole = len(words) - len(words) % r
        words, self._pending = words[:whole], words[whole:]
        fields, labels = unpack_rows(words, self.width, fmt, cfg.n_features)
        va, vb = decode(fields, fmt, table)
        va, vb = va.astype(np.int64), vb.astype(np.int64)
        labels = labels.astype(np.int64)
        snapshots = []
        start = 0
        while start < len(labels):
            take = min(cfg.rows_per_epoch - self._rows_in_epoch, len(labels) - start)
            end = start + take
            self._run_rows(va[start:end], vb[start:end], labels[start:end])
            start = end
            if self._rows_in_epoch == cfg.rows_per_epoch:
                self._rows_in_epoch = 0
                self.counters.epochs += 1
                snapshots.append(self.read_model())
        return snapshots

    def run_epochs(self, words, epochs):
        """Resident mode: train ``epochs`` epochs over the same stored rows."""
        cfg = self._need_config()
        n_rows = len(words) // contract.row_words(self.width, cfg.fmt, cfg.n_features)
        if n_rows != cfg.rows_per_epoch:
            raise DeviceError(f"stored data has {n_rows} rows, the epoch {cfg.rows_per_epoch}")
        return [snap for _ in range(epochs) for snap in self.process(words)]

    # --- the arithmetic -----------------------------------------------------------------------

    def _need_config(self):
        if self.config is None:
            raise DeviceError("the device is not configured")
        return self.config

    def _run_rows(self, va, vb, labels):
        """Rows of one epoch, continuing at ``self._rows_in_epoch``."""
        cfg = self.config
        lr = lr_for_epoch(cfg.lr, cfg.lr_decay_epochs, self.counters.epochs)
        frac = cfg.fmt.value_frac
        b = cfg.batch
        # Batches are counted from the epoch start; self._after holds the model after each batch.
        pos = 0
        while pos < len(labels):
            row_in_epoch = self._rows_in_epoch
            k, offset = divmod(row_in_epoch, b)
            if offset == 0:
                if k == 0:
                    self._after = [self.model.copy()]   # "after batch -1": the epoch start
                else:
                    self._after.append(self.model.copy())
                    del self._after[:-2]
                self._snapshot = self._after[0] if cfg.delay and len(self._after) > 1 \
                    else self._after[-1]
            take = min(b - offset, len(labels) - pos)
            rows = slice(pos, pos + take)
            d = _dot_floor(self._snapshot, va[rows], frac)
            g, g_sat = _gradient_scalar(cfg.loss, d, labels[rows])
            c_raw = contract.round_shift(g * lr, _C_SHIFT)
            c = np.clip(c_raw, _SCALAR_MIN, _SCALAR_MAX)
            c_sat = c != c_raw
            delta = contract.round_shift(c[:, None] * vb[rows], _DELTA_SHIFT + frac)
            self._apply(delta, g_sat | c_sat)
            pos += take
            self._rows_in_epoch += take
            self.counters.rows += take

    def _apply(self, delta, row_sat):
        """w = sat32(w - delta_r) for each row r in order; count rows that saturated."""
        cum = self.model[None, :] - np.cumsum(delta, axis=0)
        if cum.min() >= _MODEL_MIN and cum.max() <= _MODEL_MAX:
            self.model = cum[-1].copy()
            self.counters.saturated_rows += int(row_sat.sum())
            return
        w = self.model.copy()
        for r in range(len(delta)):
            raw = w - delta[r]
            w = np.clip(raw, _MODEL_MIN, _MODEL_MAX)
            self.counters.saturated_rows += int(row_sat[r] or (w != raw).any())
        self.model = w

