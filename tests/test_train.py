"""Host training driver and the `zipml train` command line on the golden device."""

import json

import numpy as np
import pytest

from zipml.contract import Encoding, Format, Loss
from zipml.host.cli import main
from zipml.host.datasets import load_dataset
from zipml.host.train import prepare, train
from zipml.sim.golden import GoldenDevice


@pytest.fixture(scope="module")
def diabetes():
    data = load_dataset("diabetes")
    return prepare(data.X, data.y)


def run(problem, fmt, **kwargs):
    return train(GoldenDevice(width=64, n_max=64), problem, fmt=fmt, epochs=3, **kwargs)


def test_pair_and_compact_train_the_same_model(diabetes):
    """Same seed, same samples: COMPACT moves fewer bits for the identical model."""
    for bits in (1, 3, 4):
        a = run(diabetes, Format(Encoding.PAIR, bits))
        b = run(diabetes, Format(Encoding.COMPACT, bits))
        np.testing.assert_array_equal(a.words, b.words)


def test_same_seed_same_words_other_seed_differs(diabetes):
    fmt = Format(Encoding.PAIR, 2)
    a, b, c = run(diabetes, fmt, seed=1), run(diabetes, fmt, seed=1), run(diabetes, fmt, seed=2)
    np.testing.assert_array_equal(a.words, b.words)
    assert not np.array_equal(a.words, c.words)


def test_training_reduces_loss_and_reports_user_units(diabetes):
    result = run(diabetes, Format(Encoding.RAW), rounding="nearest", lr=1 / 16)
    assert result.loss_curve[-1] < 0.5 * result.loss_curve[0]
    data = load_dataset("diabetes")
    pred = data.X @ result.coef + result.intercept
    # The reported model in user units predicts what the device model predicts in level space.
    xv = diabetes.xs * Format(Encoding.RAW).top
    scaled = diabetes.labels.inverse_transform(xv @ result.w)
    np.testing.assert_allclose(pred, scaled, rtol=1e-9, atol=1e-6)


def test_classification_labels_must_be_binary():
    data = load_dataset("digits")
    with pytest.raises(ValueError, match="two classes"):
        prepare(data.X, data.y, loss=Loss.LOGISTIC)


def test_cli_train_writes_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    rc = main(["train", "--device", "golden", "--data", "diabetes", "--bits", "2",
               "--encoding", "compact", "--epochs", "2", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert len(result["loss_curve"]) == 3
    assert len(result["model_words"]) == 11 and len(result["coef"]) == 10
    assert result["parameters"]["bits"] == 2
    assert "epoch   2" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--data", "nosuch"], "unknown"),
    (["--bits", "9"], "bits"),
    (["--lr", "1.5"], "learning rate"),
    (["--device", "fpga9"], "unknown device"),
])
def test_cli_train_bad_arguments_give_clear_errors(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["train", "--epochs", "1", *argv])
