"""ZipML: low-precision SGD with double sampling, on open FPGA hardware.

``ZipMLRegressor`` and ``ZipMLClassifier`` (scikit-learn estimators, :mod:`zipml.host.estimators`)
are imported on first use, so ``import zipml`` stays light.
"""

__all__ = ["ZipMLRegressor", "ZipMLClassifier"]


def __getattr__(name):
    if name in __all__:
        from zipml.host import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
