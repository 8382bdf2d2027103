"""Device strings -> device objects with the golden model's command methods.

``golden`` is the in-process numpy model of the device; the other strings open a transport and
speak the framed protocol (:class:`zipml.host.client.DeviceClient`) to a board, to its
simulation, or to the protocol device in this process.
"""

from urllib.parse import parse_qs, urlsplit

__all__ = ["DEVICE_HELP", "open_device", "open_transport"]

DEVICE_HELP = ("golden (the numpy model of the device); inproc or loop (the protocol device in "
               "this process, over real frames); socket://HOST:PORT; "
               "serial:///dev/ttyUSB1?baud=3000000 or a tty path; xdma:///dev/xdma0 (PCIe)")

DEFAULT_BAUD = 3_000_000   # the boards' UART rate (hw/boards.py)


def open_transport(spec, *, width=128, n_max=1024):
    """The transport a device string names, or None for ``golden``."""
    from zipml.host import transport as t
    if spec in ("inproc", "loop"):
        from zipml.sim.golden import GoldenDevice
        from zipml.sim.protocol_device import ProtocolDevice
        return t.InProcessTransport(ProtocolDevice(GoldenDevice(width=width, n_max=n_max)))
    if spec.startswith("socket://"):
        return t.SerialTransport(spec)
    if spec.startswith("serial://"):
        url = urlsplit(spec)
        query = parse_qs(url.query)
        unknown = set(query) - {"baud"}
        if unknown or not url.path:
            raise ValueError(f"device {spec!r}: use serial:///dev/ttyUSB1?baud=3000000")
        try:
            baud = int(query.get("baud", [DEFAULT_BAUD])[-1])
        except ValueError:
            raise ValueError(f"device {spec!r}: baud must be an integer") from None
        return t.SerialTransport(url.netloc + url.path, baud)
    if spec.startswith("xdma://"):
        base = spec[len("xdma://"):]
        if not base:
            raise ValueError(f"device {spec!r}: use xdma:///dev/xdma0")
        return t.XdmaTransport(base)
    if spec.startswith("/dev/") or spec.upper().startswith("COM"):
        return t.SerialTransport(spec, DEFAULT_BAUD)
    raise ValueError(f"unknown device {spec!r}; use {DEVICE_HELP}")


def open_device(spec, *, width=128, n_max=1024, timeout=5.0, retries=3):
    """Open the device named by ``spec``; raise ValueError for an unknown string.

    ``width`` and ``n_max`` shape the in-process devices (``golden``, ``inproc``); a real device
    reports its own (IDENTIFY). ``timeout`` is the wait for each response.
    """
    if spec == "golden":
        from zipml.sim.golden import GoldenDevice
        return GoldenDevice(width=width, n_max=n_max)
    from zipml.host.client import DeviceClient
    return DeviceClient(open_transport(spec, width=width, n_max=n_max), timeout=timeout,
                        retries=retries)
