"""The golden model: its arithmetic against direct formulas, its batch semantics, and its error
bound against a float64 model of the same computation."""

import math

import numpy as np
import pytest

from zipml import contract
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.host.quantize import decode, encode, encode_labels
from zipml.sim.golden import DeviceError, GoldenDevice, TrainConfig

ONE = 1 << contract.MODEL_FRAC


def make_rows(rng, n_rows, n, fmt, width, rounding="stochastic", table=None, label_scale=0.5):
    """Random level-space rows, packed; returns (words, vA, vB, labels)."""
    x = rng.uniform(-1, 1, (n_rows, n)) * fmt.top
    if not fmt.signed:
        x = np.abs(x)
    fields = encode(x, fmt, rounding, rng, table=table)
    labels = encode_labels(rng.uniform(-1, 1, n_rows) * label_scale)
    va, vb = decode(fields, fmt, table)
    return pack_rows(fields, labels, width, fmt), va, vb, labels


def reference_rows(w, va, vb, labels, cfg, epoch=0):
    """Row-by-row integer reference written straight from docs/NUMERICS.md (batch 1)."""
    w = [int(x) for x in w]
    f = cfg.fmt.value_frac
    lr = cfg.lr if cfg.lr_decay_epochs == 0 else cfg.lr >> (epoch // cfg.lr_decay_epochs)
    sig = contract.sigmoid_table()
    for a, b, y in zip(va.tolist(), vb.tolist(), labels.tolist()):
        d = sum(wi * ai for wi, ai in zip(w, a)) >> f
        s = 1 if y > 0 else -1
        if cfg.loss == Loss.SQUARED:
            g = contract.sat(d - y, 32)
        elif cfg.loss == Loss.LOGISTIC:
            g = -s * sig[min(max((-s * d >> 20) + 128, 0), 255)]
        else:
            g = -s * ONE if s * d < ONE else 0
        c = contract.sat(contract.round_shift(g * lr, 18), 32)
        w = [contract.sat(wi - contract.round_shift(c * bi, 6 + f), 32) for wi, bi in zip(w, b)]
    return np.array(w, np.int64)


FORMATS = [Format(e, b) for e in (Encoding.SINGLE, Encoding.PAIR, Encoding.COMPACT)
           for b in (1, 2, 3, 4, 8)] + [Format(Encoding.RAW, 8),
                                        Format(Encoding.PAIR, 3, LevelMode.UNIFORM_UNSIGNED)]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("loss", list(Loss), ids=lambda x: x.name)
def test_rows_match_direct_formulas(fmt, loss):
    rng = np.random.default_rng(1)
    n, width = 13, 64
    words, va, vb, labels = make_rows(rng, 40, n, fmt, width)
    if loss != Loss.SQUARED:
        labels = np.where(labels > 0, ONE, -ONE)
        fields_words = words.reshape(40, -1, width // 32).copy()
        fields_words[:, -1, -1] = labels.astype(np.int32).view(np.uint32)
        words = fields_words.reshape(-1, width // 32)
    cfg = TrainConfig(n_features=n, rows_per_epoch=40, fmt=fmt, loss=loss, lr=ONE // 8)
    dev = GoldenDevice(width=width, n_max=64)
    dev.configure(cfg)
    w0 = rng.integers(-ONE, ONE, n)
    dev.load_model(w0)
    snaps = dev.process(words)
    assert len(snaps) == 1 and dev.counters.rows == 40 and dev.counters.epochs == 1
    np.testing.assert_array_equal(dev.read_model(), reference_rows(w0, va, vb, labels, cfg))


def test_table_levels_match_direct_formulas():
    rng = np.random.default_rng(2)
    fmt = Format(Encoding.COMPACT, 3, LevelMode.TABLE)
    table = (-255, -120, -40, -5, 7, 60, 130, 255)
    words, va, vb, labels = make_rows(rng, 30, 9, fmt, 32, table=table)
    cfg = TrainConfig(n_features=9, rows_per_epoch=30, fmt=fmt, lr=ONE // 16)
    dev = GoldenDevice(width=32, n_max=16)
    dev.configure(cfg)
    dev.load_levels(table)
    dev.process(words)
    np.testing.assert_array_equal(dev.read_model(),
                                  reference_rows(np.zeros(9, np.int64), va, vb, labels, cfg))


def run(dev_kwargs, cfg, words, w0=None, calls=1):
    dev = GoldenDevice(**dev_kwargs)
    dev.configure(cfg)
    if w0 is not None:
        dev.load_model(w0)
    chunks = np.array_split(words, calls) if calls > 1 else [words]
    snaps = [s for chunk in chunks for s in dev.process(chunk)]
    return dev, snaps


def test_batch_semantics_delay_0_and_1():
    """Batch k's dot products see the model after batch k-1 (delay 0) or k-2 (delay 1)."""
    rng = np.random.default_rng(3)
    fmt = Format(Encoding.PAIR, 4)
    n, n_rows, width, b = 6, 23, 32, 4
    words, va, vb, labels = make_rows(rng, n_rows, n, fmt, width)
    lr = ONE // 8
    for delay in (0, 1):
        cfg = TrainConfig(n_features=n, rows_per_epoch=n_rows, fmt=fmt, lr=lr, batch=b,
                          delay=delay)
        dev, _ = run(dict(width=width, n_max=8), cfg, words)
        # Direct construction: snapshots per batch.
        w = np.zeros(n, np.int64)
        after = [w.copy()]
        for k, start in enumerate(range(0, n_rows, b)):
            snap = after[max(0, len(after) - 1 - delay)] if k else after[0]
            for r in range(start, min(start + b, n_rows)):
                d = int(snap @ va[r]) >> fmt.value_frac
                c = contract.sat(contract.round_shift((d - int(labels[r])) * lr, 18), 32)
                w = np.clip(w - contract.round_shift(c * vb[r], 6 + fmt.value_frac),
                            *contract.sat_limits(32))
            after.append(w.copy())
        np.testing.assert_array_equal(dev.read_model(), w)


def test_batch_one_is_sequential_sgd():
    rng = np.random.default_rng(4)
    fmt = Format(Encoding.SINGLE, 8)
    words, va, vb, labels = make_rows(rng, 50, 5, fmt, 64)
    cfg = TrainConfig(n_features=5, rows_per_epoch=50, fmt=fmt, lr=ONE // 4, batch=1)
    dev, _ = run(dict(width=64, n_max=8), cfg, words)
    np.testing.assert_array_equal(dev.read_model(),
                                  reference_rows(np.zeros(5, np.int64), va, vb, labels, cfg))


def test_stream_split_anywhere_gives_same_result():
    """A stream cut into arbitrary chunks (as bytes arrive) trains the same model."""
    rng = np.random.default_rng(5)
    fmt = Format(Encoding.COMPACT, 4)
    words, *_ = make_rows(rng, 61, 20, fmt, 128)
    cfg = TrainConfig(n_features=20, rows_per_epoch=20, fmt=fmt, batch=8, delay=1,
                      lr=ONE // 32, lr_decay_epochs=1)
    a, snaps_a = run(dict(width=128, n_max=32), cfg, words)
    b, snaps_b = run(dict(width=128, n_max=32), cfg, words, calls=7)
    np.testing.assert_array_equal(a.read_model(), b.read_model())
    assert len(snaps_a) == len(snaps_b) == 3
    for x, y in zip(snaps_a, snaps_b):
        np.testing.assert_array_equal(x, y)
    assert a.counters.rows == 61 and a.counters.epochs == 3


def test_learning_rate_decay_halves_per_epochs():
    rng = np.random.default_rng(6)
    fmt = Format(Encoding.PAIR, 2)
    words, va, vb, labels = make_rows(rng, 10, 4, fmt, 32)
    cfg = TrainConfig(n_features=4, rows_per_epoch=10, fmt=fmt, lr=ONE // 4, lr_decay_epochs=2)
    dev = GoldenDevice(width=32, n_max=8)
    dev.configure(cfg)
    w = np.zeros(4, np.int64)
    for epoch in range(5):
        dev.process(words)
        w = reference_rows(w, va, vb, labels, cfg, epoch=epoch)
        np.testing.assert_array_equal(dev.read_model(), w)


def test_saturation_clamps_and_is_counted():
    """Labels and learning rates at their limits saturate g, c and the model; nothing wraps."""
    fmt = Format(Encoding.SINGLE, 8)
    lo, hi = contract.sat_limits(32)
    top = np.full((4, 1), 255, np.uint32)                   # code 255: value 255/256
    # 1. The model: near its top, pushed further up by a negative update scalar.
    words = pack_rows(top, np.full(4, hi, np.int32), 32, fmt)
    cfg = TrainConfig(n_features=1, rows_per_epoch=4, fmt=fmt, lr=(1 << 24) - 1)
    dev, _ = run(dict(width=32, n_max=4), cfg, words, w0=np.array([hi - 1000]))
    assert dev.read_model().tolist() == [hi]
    assert dev.counters.saturated_rows == 4
    # 2. g and c: a label of -128 against a zero model gives g = 2**31 (saturated to 2**31 - 1),
    # c = g * lr far beyond 2 (saturated); the model moves by round(c * 255 / 2**14) only.
    words = pack_rows(top[:1], np.array([lo], np.int32), 32, fmt)
    cfg = TrainConfig(n_features=1, rows_per_epoch=1, fmt=fmt, lr=(1 << 24) - 1)
    dev, _ = run(dict(width=32, n_max=4), cfg, words)
    assert dev.read_model().tolist() == [-contract.round_shift(hi * 255, 14)]
    assert dev.counters.saturated_rows == 1


def test_bad_configuration_and_commands_are_rejected():
    dev = GoldenDevice(width=64, n_max=16)
    with pytest.raises(DeviceError, match="not configured"):
        dev.process(np.zeros((1, 2), np.uint32))
    with pytest.raises(DeviceError, match="n_features"):
        dev.configure(TrainConfig(n_features=17, rows_per_epoch=1))
    with pytest.raises(DeviceError, match="lr"):
        dev.configure(TrainConfig(n_features=2, rows_per_epoch=1, lr=0))
    with pytest.raises(DeviceError, match="delay"):
        dev.configure(TrainConfig(n_features=2, rows_per_epoch=1, delay=2))
    dev.configure(TrainConfig(n_features=2, rows_per_epoch=1,
                              fmt=Format(Encoding.PAIR, 2, LevelMode.TABLE)))
    with pytest.raises(DeviceError, match="table"):
        dev.process(np.zeros((1, 2), np.uint32))
    with pytest.raises(DeviceError, match="increasing"):
        dev.load_levels((0, 0, 1, 2))
    with pytest.raises(DeviceError, match="words"):
        dev.load_model(np.zeros(3))
    with pytest.raises(DeviceError, match="width"):
        GoldenDevice(width=48)


@pytest.mark.parametrize("fmt", [Format(Encoding.SINGLE, 8), Format(Encoding.RAW, 8),
                                 Format(Encoding.SINGLE, 3)], ids=str)
def test_error_bound_against_float_model(fmt):
    """The fixed-point model stays within its stated bound of the same computation in float64.

    With vA = vB = v and lr * |v|^2 <= 2, one SGD step is non-expansive, so rounding errors add
    up at most linearly: |w_fx - w_float|_2 <= T * eps, with per-row rounding
    eps = (lr * 2**-24 + 2**-31) * |v|_2 + sqrt(n) * 2**-25 (floor of D, round of c, of delta).
    """
    rng = np.random.default_rng(7)
    n, n_rows, width = 40, 300, 128
    words, va, vb, labels = make_rows(rng, n_rows, n, fmt, width)
    f = fmt.value_frac
    v = va / 2.0**f
    lr = 2**-7
    assert (lr * (v**2).sum(axis=1)).max() <= 2
    cfg = TrainConfig(n_features=n, rows_per_epoch=n_rows, fmt=fmt, lr=int(lr * 2**24))
    dev, _ = run(dict(width=width, n_max=64), cfg, words)
    w = np.zeros(n)
    y = labels / 2.0**24
    for r in range(n_rows):
        w = w - lr * (v[r] @ w - y[r]) * v[r]
    err = np.linalg.norm(dev.read_model() / 2.0**24 - w)
    eps = (lr * 2**-24 + 2**-31) * np.linalg.norm(v, axis=1).max() + math.sqrt(n) * 2**-25
    assert err <= n_rows * eps
    assert np.linalg.norm(w) > 100 * n_rows * eps    # the bound is not vacuous
