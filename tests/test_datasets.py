"""Data set loading: bundled sets, seeded synthetic data, CSV and svmlight files."""

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file

from zipml.host.datasets import DATASET_NAMES, Dataset, load_dataset


@pytest.mark.parametrize(
    "name, shape, task",
    [
        ("diabetes", (442, 10), "regression"),
        ("breast_cancer", (569, 30), "binary"),
        ("digits", (1797, 64), "multiclass"),
        ("randhie", (20190, 9), "regression"),
    ],
)
def test_bundled(name, shape, task):
    ds = load_dataset(name)
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.X.shape, ds.y.shape, ds.task) == (name, shape, (shape[0],), task)
    assert ds.X.dtype == ds.y.dtype == np.float64
    assert np.isfinite(ds.X).all() and np.isfinite(ds.y).all()
    assert ds.description


def test_bundled_labels():
    assert set(np.unique(load_dataset("breast_cancer").y)) == {0.0, 1.0}
    assert set(np.unique(load_dataset("digits").y)) == set(range(10))


def test_names_all_load():
    for name in DATASET_NAMES:
        spec = name if not name.startswith("synthetic") else name + ":50:3"
        assert load_dataset(spec).n_samples > 0


def test_synthetic_default_shape():
    ds = load_dataset("synthetic")
    assert ds.X.shape == (10_000, 100) and ds.task == "regression"
    assert ds.X.min() >= -1.0 and ds.X.max() <= 1.0


@pytest.mark.parametrize("kind", ["synthetic", "synthetic-classification"])
def test_synthetic_deterministic(kind):
    a = load_dataset(f"{kind}:200:7", seed=3)
    b = load_dataset(f"{kind}:200:7", seed=3)
    c = load_dataset(f"{kind}:200:7", seed=4)
    assert a.X.shape == (200, 7) and a.y.shape == (200,)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, c.X)


def test_synthetic_regression_is_nearly_linear():
    ds = load_dataset("synthetic:2000:5", seed=1)
    A = np.c_[ds.X, np.ones(len(ds.y))]
    residual = ds.y - A @ np.linalg.lstsq(A, ds.y, rcond=None)[0]
    assert residual.std() < 0.05


def test_synthetic_classification_labels():
    ds = load_dataset("synthetic-classification:4000:10", seed=0)
    assert ds.task == "binary"
    assert set(np.unique(ds.y)) == {0.0, 1.0}
    assert 0.3 < ds.y.mean() < 0.7


@pytest.mark.parametrize(
    "spec",
    ["synthetic:10", "synthetic:a:b", "synthetic:0:5", "synthetic:5:-1", "synthetic:1:2:3",
     "synthetic-classification:x"],
)
def test_synthetic_bad_spec(spec):
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset(spec)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError) as info:
        load_dataset("cadata")
    for name in DATASET_NAMES:
        assert name in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset(str(path))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_dataset(path)


@pytest.mark.parametrize("header", [False, True])
def test_csv_round_trip(tmp_path, header):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    path = tmp_path / "data.csv"
    np.savetxt(path, np.c_[X, y], delimiter=",", fmt="%.17g",
               header="a,b,c,d,label" if header else "", comments="")
    ds = load_dataset(str(path))
    assert ds.name == "data" and ds.task == "regression"
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)


def test_csv_tab_delimited_and_task_inference(tmp_path):
    path = tmp_path / "cls.tsv"
    path.write_text("x1\tx2\ty\n0.5\t1\t0\n-1\t2\t1\n3\t4\t1\n")
    ds = load_dataset(path)
    assert ds.X.shape == (3, 2) and ds.task == "binary"
    assert load_dataset(path, task="regression").task == "regression"


@pytest.mark.parametrize(
    "text, where",
    [
        ("1,2,3\n4,oops,6\n", r"line 2, column 2: 'oops'"),
        ("a,b,y\n1,2,3\n4,5,\n", r"line 3, column 3 \('y'\): ''"),
        ("1,2,3\n4,nan,6\n", r"line 2, column 2: 'nan'"),
        ("1,2,3\n4,5\n", r"line 2 has 2 columns, expected 3"),
    ],
)
def test_csv_bad_cell(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=where):
        load_dataset(str(path))


def test_svmlight_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 6))
    X[X < 0.3] = 0.0  # sparse, like most LIBSVM files
    y = np.where(rng.random(25) < 0.5, -1.0, 1.0)
    path = tmp_path / "small.svm"
    dump_svmlight_file(X, y, str(path))
    ds = load_dataset(str(path))
    assert ds.task == "binary" and ds.name == "small"
    assert isinstance(ds.X, np.ndarray) and ds.X.dtype == np.float64
    # load_svmlight_file sizes X by the largest index present, so trailing zero columns may drop.
    np.testing.assert_allclose(ds.X, X[:, : ds.X.shape[1]])
    np.testing.assert_array_equal(ds.y, y)
