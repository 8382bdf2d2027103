"""Device strings -> device objects with the golden model's command methods.

``golden`` is the in-process numpy model of the device; the other strings open a transport and
speak the framed protocol to a board or to its simulation (see :mod:`zipml.host.client`).
"""

__all__ = ["DEVICE_HELP", "open_device"]

DEVICE_HELP = "golden (the numpy model of the device)"


def open_device(spec, *, width=128, n_max=1024, timeout=5.0):
    """Open the device named by ``spec``; raise ValueError for an unknown string."""
    if spec == "golden":
        from zipml.sim.golden import GoldenDevice
        return GoldenDevice(width=width, n_max=n_max)
    raise ValueError(f"unknown device {spec!r}; use {DEVICE_HELP}")
