"""Device strings -> device objects with the golden model's command methods.

``golden`` is the in-process numpy model of the device; the other strings open a transport and
speak the framed protocol (:class:`zipml.host.client.DeviceClient`) to a board, to its
simulation, or to the protocol device in this process.
"""

from urllib.parse import parse_qs, urlsplit

__all__ = ["DEVICE_HELP", "RTL_N_MAX", "open_device", "open_transport", "open_virtual_board"]

DEVICE_HELP = ("golden (the numpy model of the device); rtl (the device's gateware simulated "
               "in Verilator, started for the run); inproc or loop (the protocol device in "
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
    if spec == "rtl":
        return open_virtual_board(width=width, n_max=min(n_max, RTL_N_MAX), timeout=timeout,
                                  retries=retries)
    from zipml.host.client import DeviceClient
    return DeviceClient(open_transport(spec, width=width, n_max=n_max), timeout=timeout,
                        retries=retries)


#: n_max of the virtual board ``rtl`` starts (its Verilator build grows with n_max).
RTL_N_MAX = 256


def open_virtual_board(*, width=128, n_max=RTL_N_MAX, timeout=5.0, retries=3, **params):
    """Start the virtual board (the device's gateware in Verilator) and connect to it; closing
    the client stops the board. The first start of a configuration compiles it (minutes)."""
    from zipml.host.client import DeviceClient
    from zipml.host.transport import SerialTransport
    from zipml.sim.virtual_board import start_virtual_board, stop

    class VirtualBoardClient(DeviceClient):
        def close(self):
            try:
                super().close()
            finally:
                stop(proc)

    proc, port = start_virtual_board(width=width, n_max=n_max, **params)
    try:
        return VirtualBoardClient(SerialTransport(f"socket://127.0.0.1:{port}"),
                                  timeout=timeout, retries=retries)
    except BaseException:
        stop(proc)
        raise
