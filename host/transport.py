"""Byte transports between the host and a device: serial ports and sockets, PCIe (XDMA), and
the in-process protocol device.

A transport moves bytes and nothing else: :meth:`Transport.write` sends all of them (or raises
:class:`~zipml.host.client.DeviceTimeout`), :meth:`Transport.read` returns what arrives within a
timeout (possibly nothing), :meth:`Transport.close` releases the link. Framing, retries and
commands are :class:`zipml.host.client.DeviceClient`'s.
"""

import errno
import os
import select
import time

import numpy as np

from zipml.host.client import DeviceTimeout, LinkError

__all__ = ["Transport", "SerialTransport", "XdmaTransport", "InProcessTransport",
           "FaultyTransport", "xdma_paths"]


class Transport:
    """The interface: ``write(bytes)``, ``read(max_bytes, timeout) -> bytes``, ``close()``."""

    def write(self, data):
        """Send all of ``data``."""
        raise NotImplementedError

    def read(self, max_bytes, timeout):
        """Up to ``max_bytes`` bytes: returns as soon as some have arrived, or ``b""`` after
        ``timeout`` seconds."""
        raise NotImplementedError

    def close(self):
        """Release the link (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A pyserial port: a tty path, ``socket://HOST:PORT``, ``loop://``, any pyserial URL.

    Parameters
    ----------
    url : str
    baud : int
    write_timeout : float
        Seconds a write may block (a stalled device raises DeviceTimeout).
    """

    def __init__(self, url, baud=115200, *, write_timeout=5.0):
        import serial
        self.url = url
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0,
                                               write_timeout=write_timeout)
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open {url}: {exc}") from None
        self._timeout = 0
        self._serial = serial

    def _set_timeout(self, timeout):
        if timeout != self._timeout:
            self._port.timeout = timeout
            self._timeout = timeout

    def write(self, data):
        try:
            self._port.write(data)
        except self._serial.SerialTimeoutException:
            raise DeviceTimeout(f"writing to {self.url}: the device took nothing for "
                                f"{self._port.write_timeout} s") from None
        except self._serial.SerialException as exc:
            raise LinkError(f"writing to {self.url}: {exc}") from None

    def read(self, max_bytes, timeout):
        try:
            self._set_timeout(max(0.0, timeout))
            first = self._port.read(1)
            if not first or max_bytes == 1:
                return first
            self._set_timeout(0)
            return first + self._port.read(max_bytes - 1)
        except self._serial.SerialException as exc:
            raise LinkError(f"reading from {self.url}: {exc}") from None

    def close(self):
        self._port.close()

    def __repr__(self):
        return f"SerialTransport({self.url!r})"


def xdma_paths(base, channel=0):
    """The XDMA driver's character devices for ``base`` (e.g. ``/dev/xdma0``):
    (host-to-card, card-to-host)."""
    return f"{base}_h2c_{channel}", f"{base}_c2h_{channel}"


class XdmaTransport(Transport):
    """Xilinx XDMA character devices: requests are written to ``<base>_h2c_<n>``, responses
    read from ``<base>_c2h_<n>``.

    Both are opened as plain files, non-blocking, and waited on with ``poll``. Named pipes at
    the same paths stand in for them in tests, through this very code. (The XDMA driver's
    streaming reads return at the end of a packet, so the gateware ends each response frame
    with ``tlast``; its ``c2h_timeout`` bounds a read that finds nothing.)

    Parameters
    ----------
    base : str
        The device prefix, e.g. ``/dev/xdma0``.
    channel : int
    open_timeout, write_timeout : float
        Seconds to wait for the h2c side to accept the open, and a write.
    """

    def __init__(self, base, channel=0, *, open_timeout=2.0, write_timeout=5.0):
        self.h2c_path, self.c2h_path = xdma_paths(base, channel)
        self.write_timeout = write_timeout
        self._rx = self._tx = None
        try:
            self._rx = os.open(self.c2h_path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise LinkError(f"cannot open {self.c2h_path}: {exc.strerror}") from None
        deadline = time.monotonic() + open_timeout
        while self._tx is None:
            try:
                self._tx = os.open(self.h2c_path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                # ENXIO: a pipe with nobody reading (the device is not there yet).
                if exc.errno != errno.ENXIO:
                    self.close()
                    raise LinkError(f"cannot open {self.h2c_path}: {exc.strerror}") from None
                if time.monotonic() > deadline:
                    self.close()
                    raise DeviceTimeout(f"opening {self.h2c_path}: no device reading it "
                                        f"after {open_timeout} s") from None
                time.sleep(0.01)
        self._rpoll, self._wpoll = select.poll(), select.poll()
        self._rpoll.register(self._rx, select.POLLIN)
        self._wpoll.register(self._tx, select.POLLOUT)

    def write(self, data):
        view = memoryview(bytes(data))
        deadline = time.monotonic() + self.write_timeout
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceTimeout(f"writing to {self.h2c_path}: the device took nothing for "
                                    f"{self.write_timeout} s")
            if not self._wpoll.poll(left * 1000):
                continue
            try:
                view = view[os.write(self._tx, view):]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise LinkError(f"writing to {self.h2c_path}: {exc.strerror}") from None

    def read(self, max_bytes, timeout):
        if not self._rpoll.poll(max(0.0, timeout) * 1000):
            return b""
        try:
            data = os.read(self._rx, max_bytes)
        except BlockingIOError:
            return b""
        if not data:
            # End of file: a pipe whose writer went away. Nothing more will come.
            time.sleep(max(0.0, timeout))
        return data

    def close(self):
        for name in ("_rx", "_tx"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __repr__(self):
        return f"XdmaTransport({self.h2c_path!r}, {self.c2h_path!r})"


class InProcessTransport(Transport):
    """A :class:`zipml.sim.protocol_device.ProtocolDevice` in this process, over real frames.

    The device answers during :meth:`write`; a read that finds nothing waits out its timeout
    (nothing else can arrive) and tells the device the line went idle.
    """

    def __init__(self, device):
        self.device = device
        self._buffer = bytearray()

    def write(self, data):
        self._buffer += self.device.feed(data)

    def read(self, max_bytes, timeout):
        if not self._buffer:
            self.device.line_idle()
            time.sleep(max(0.0, timeout))
            return b""
        data = bytes(self._buffer[:max_bytes])
        del self._buffer[:max_bytes]
        return data

    def __repr__(self):
        return "InProcessTransport()"


class FaultyTransport(Transport):
    """Wraps a transport and corrupts bytes in both directions: seeded random bit flips, dropped
    bytes and duplicated bytes, each with probability ``rate`` per byte sent (``rx_rate`` per
    byte received; ``rate`` when None).

    Members
    -------
    faults : dict
        Faults injected: ``flipped``, ``dropped``, ``duplicated`` per direction (``tx_``,
        ``rx_``).
    """

    def __init__(self, inner, rate, *, rx_rate=None, seed=0):
        self.inner = inner
        self.rates = {"tx": rate, "rx": rate if rx_rate is None else rx_rate}
        self._rng = np.random.default_rng(seed)
        self.faults = {f"{d}_{k}": 0 for d in ("tx", "rx")
                       for k in ("flipped", "dropped", "duplicated")}

    def _corrupt(self, data, direction):
        if not data:
            return data
        buf = np.frombuffer(data, np.uint8).copy()
        rate = self.rates[direction]
        u = self._rng.random((len(buf), 3))
        flip = u[:, 0] < rate
        buf[flip] ^= (1 << self._rng.integers(0, 8, int(flip.sum()))).astype(np.uint8)
        repeat = np.ones(len(buf), np.int64)
        repeat[u[:, 1] < rate] = 0
        repeat[(u[:, 2] < rate) & (repeat == 1)] = 2
        self.faults[f"{direction}_flipped"] += int(flip.sum())
        self.faults[f"{direction}_dropped"] += int((repeat == 0).sum())
        self.faults[f"{direction}_duplicated"] += int((repeat == 2).sum())
        return np.repeat(buf, repeat).tobytes()

    def write(self, data):
        self.inner.write(self._corrupt(bytes(data), "tx"))

    def read(self, max_bytes, timeout):
        return self._corrupt(self.inner.read(max_bytes, timeout), "rx")

    def close(self):
        self.inner.close()

    def __repr__(self):
        return f"FaultyTransport({self.inner!r}, rates={self.rates})"
