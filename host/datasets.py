"""Data sets for training: offline stand-ins for the paper's sets, seeded synthetic data, files.

The paper's data sets (cadata, YearPredictionMSD, gisette, ...) cannot be downloaded here, so the
bundled names are small sets that ship inside scikit-learn and statsmodels. Users bring the real
ones as LIBSVM/svmlight files or CSV files and pass the path instead of a name.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DATASET_NAMES", "DATASET_HELP", "TASKS", "Dataset", "load_dataset"]

TASKS = ("regression", "binary", "multiclass")

#: Names accepted by `load_dataset` besides paths (the synthetic ones also take `:N:D`).
DATASET_NAMES = (
    "diabetes",
    "breast_cancer",
    "digits",
    "randhie",
    "synthetic",
    "synthetic-classification",
)

DATASET_HELP = (
    "diabetes (442x10, regression), breast_cancer (569x30, binary), digits (1797x64, "
    "multiclass), randhie (20190x9, regression), synthetic[:N:D] (regression, default "
    "10000:100), synthetic-classification[:N:D] (binary), or a path to a CSV file (last column "
    "is the label) or a LIBSVM/svmlight file"
)

_SYNTHETIC_DEFAULT = (10_000, 100)
_SYNTHETIC_NOISE = 0.01  # std of the gaussian noise added to synthetic regression labels
_LABEL_FLIP = 0.05  # fraction of synthetic classification labels flipped at random
_MAX_CLASSES = 20  # integer labels with at most this many values count as classes in files


@dataclass(frozen=True)
class Dataset:
    """A loaded data set: features ``X`` (N, d) and labels ``y`` (N,), both float64.

    Members
    -------
    name : short name, e.g. ``"diabetes"`` or the file's stem.
    X, y : features and labels. Class labels are kept as given (e.g. 0/1); estimators map them.
    task : one of ``TASKS``.
    description : one line on where the data came from.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: str
    description: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(f"shapes do not match: X {self.X.shape}, y {self.y.shape}")

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]


def load_dataset(spec: str | os.PathLike, *, seed: int = 0, task: str | None = None) -> Dataset:
    """Load a data set by name (see ``DATASET_HELP``) or from a CSV or svmlight file path.

    ``seed`` only affects the synthetic sets. ``task`` overrides the task inferred for files
    (two label values: binary; a few integer values: multiclass; otherwise regression).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if isinstance(spec, str):
        if spec in _BUNDLED:
            ds = _BUNDLED[spec]()
            return ds if task is None else _with_task(ds, task)
        kind, _, rest = spec.partition(":")
        if kind in ("synthetic", "synthetic-classification"):
            n, d = _parse_shape(spec, rest)
            if kind == "synthetic":
                ds = _synthetic_regression(n, d, seed)
            else:
                ds = _synthetic_classification(n, d, seed)
            return ds if task is None else _with_task(ds, task)
    path = Path(spec)
    if not path.exists():
        if isinstance(spec, str) and not _looks_like_path(spec):
            raise ValueError(
                f"unknown data set {spec!r}; valid names: {', '.join(DATASET_NAMES)} "
                f"(synthetic ones also as NAME:N:D), or a path to a CSV or LIBSVM file"
            )
        raise FileNotFoundError(f"data set file not found: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"data set path is a directory, not a file: {str(path)!r}")
    if _is_svmlight(path):
        (X, y), kind = _read_svmlight(path), "LIBSVM/svmlight"
    else:
        (X, y), kind = _read_csv(path), "CSV"
    return Dataset(
        name=path.stem,
        X=X,
        y=y,
        task=task or _infer_task(y),
        description=f"{kind} file {path} ({X.shape[0]}x{X.shape[1]})",
    )


# --- bundled sets ------------------------------------------------------------------------------


def _diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return _make("diabetes", X, y, "regression", "scikit-learn load_diabetes: disease progression")


def _breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return _make("breast_cancer", X, y, "binary", "scikit-learn load_breast_cancer: 0 malignant")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return _make("digits", X, y, "multiclass", "scikit-learn load_digits: 8x8 images, 0..9")


def _randhie() -> Dataset:
    # statsmodels' own split: label mdvis (outpatient visits), the other 9 columns as features.
    from statsmodels.datasets import randhie

    data = randhie.load_pandas()
    X = data.exog.to_numpy(dtype=np.float64)
    y = data.endog.to_numpy(dtype=np.float64).ravel()
    return _make(
        "randhie", X, y, "regression",
        "statsmodels randhie (RAND health insurance experiment): label mdvis, 9 features",
    )


_BUNDLED = {
    "diabetes": _diabetes,
    "breast_cancer": _breast_cancer,
    "digits": _digits,
    "randhie": _randhie,
}


# --- synthetic sets ----------------------------------------------------------------------------


def _parse_shape(spec: str, rest: str) -> tuple[int, int]:
    """Parse the ``N:D`` part of a synthetic spec ('' means the defaults)."""
    if rest == "":
        return _SYNTHETIC_DEFAULT
    parts = rest.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        n, d = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"bad synthetic spec {spec!r}: expected NAME or NAME:N:D") from None
    if n < 1 or d < 1:
        raise ValueError(f"bad synthetic spec {spec!r}: N and D must be positive")
    return n, d


def _synthetic_regression(n: int, d: int, seed: int) -> Dataset:
    """y = X w + noise, X and w uniform in [-1, 1], gaussian noise of std ``_SYNTHETIC_NOISE``."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    w = rng.uniform(-1.0, 1.0, size=d)
    y = X @ w + rng.normal(0.0, _SYNTHETIC_NOISE, size=n)
    return _make(
        f"synthetic:{n}:{d}", X, y, "regression",
        f"seeded linear regression (seed {seed}): X, w ~ U[-1,1], noise std {_SYNTHETIC_NOISE}",
    )


def _synthetic_classification(n: int, d: int, seed: int) -> Dataset:
    """Labels 0/1 from the sign of X w, then a fraction ``_LABEL_FLIP`` flipped at random."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    w = rng.uniform(-1.0, 1.0, size=d)
    y = (X @ w > 0).astype(np.float64)
    flip = rng.random(n) < _LABEL_FLIP
    y[flip] = 1.0 - y[flip]
    return _make(
        f"synthetic-classification:{n}:{d}", X, y, "binary",
        f"seeded linear classes (seed {seed}): labels 0/1 = sign of X w, "
        f"{_LABEL_FLIP:.0%} flipped",
    )


# --- files -------------------------------------------------------------------------------------


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or Path(spec).suffix != ""


def _is_svmlight(path: Path) -> bool:
    """True if the first non-blank line has ``index:value`` tokens (LIBSVM format)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                return any(":" in tok for tok in line.split()[1:])
    return False


def _read_svmlight(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(path), dtype=np.float64)
    return np.asarray(X.toarray(), dtype=np.float64), np.asarray(y, dtype=np.float64)


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a numeric CSV; the last column is the label.

    The first row is a header if none of its cells is a number. The delimiter is a comma, or a
    tab or semicolon if the first line has no comma. Errors name the line and column.
    """
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        delimiter = ","
        if "," not in first:
            delimiter = "\t" if "\t" in first else (";" if ";" in first else ",")
        reader = csv.reader(f, delimiter=delimiter)
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise ValueError(f"{path}: CSV file is empty")
    header = None
    if not any(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: CSV file has a header but no data rows")
    width = len(header) if header is not None else len(rows[0][1])
    if width < 2:
        raise ValueError(f"{path}: CSV needs at least 2 columns (features and a label)")
    data = np.empty((len(rows), width), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value):
                col = f"column {j + 1}" + (f" ({header[j]!r})" if header else "")
                raise ValueError(f"{path}: line {line}, {col}: {cell!r} is not a finite number")
            data[i, j] = value
    return data[:, :-1].copy(), data[:, -1].copy()


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --- helpers -----------------------------------------------------------------------------------


def _infer_task(y: np.ndarray) -> str:
    values = np.unique(y)
    if len(values) == 2:
        return "binary"
    if 2 < len(values) <= _MAX_CLASSES and np.all(values == np.round(values)):
        return "multiclass"
    return "regression"


def _make(name: str, X, y, task: str, description: str) -> Dataset:
    return Dataset(
        name=name,
        X=np.ascontiguousarray(X, dtype=np.float64),
        y=np.ascontiguousarray(y, dtype=np.float64).ravel(),
        task=task,
        description=description,
    )


def _with_task(ds: Dataset, task: str) -> Dataset:
    return Dataset(ds.name, ds.X, ds.y, task, ds.description)
