"""A TCP byte-stream device (the virtual board) behind named pipes laid out like the Xilinx XDMA
character devices.

The host writes requests into ``<base>_h2c_<n>`` and reads responses from ``<base>_c2h_<n>``
(:func:`zipml.host.transport.xdma_paths`), so ``xdma://<base>`` reaches the device through
:class:`zipml.host.transport.XdmaTransport`: the code that opens ``/dev/xdma0_h2c_0`` and
``/dev/xdma0_c2h_0`` on a PCIe machine. :class:`FifoBridge` copies bytes with two threads, h2c
pipe -> socket and socket -> c2h pipe; :func:`start_xdma_virtual_board` starts the virtual board
(:func:`zipml.sim.virtual_board.start_virtual_board`) and bridges it; ``zipml serve-sim --fifos
DIR`` does the same from the command line.

The bridge holds both pipes open read-write, as the protocol device's pipe server does
(:meth:`zipml.sim.protocol_device.ProtocolDevice.serve_fifos`): the host's opens neither block
nor fail, a host closing its ends is no end of file, and the device keeps one TCP connection
for the bridge's whole life, whoever opens and closes the pipes. That is how a PCIe card
behaves: it serves a byte stream whether or not a process has its character devices open.
Responses nobody reads stay in the c2h pipe (up to the pipe's capacity, then the device
stalls, as a card whose host stops reading would); :class:`~zipml.host.client.DeviceClient`
discards such leftovers when it opens.
"""

import errno
import os
import select
import socket
import stat
import threading
from pathlib import Path

from zipml.host.transport import xdma_paths

__all__ = ["FifoBridge", "XdmaVirtualBoard", "start_xdma_virtual_board"]

_POLL_MS = 50             # how often the copying threads look at the stop flag
_CHUNK = 1 << 16


class FifoBridge:
    """Serve the TCP device at ``host:port`` on the XDMA-style pipes of ``base``.

    Missing pipes are created (and removed again by :meth:`stop`); existing ones are used, and
    anything else at their paths is an error. Stop the bridge with :meth:`stop` or use it as a
    context manager: the threads are joined, and the pipes' descriptors and the socket closed.

    Parameters
    ----------
    base : str or Path
        The device prefix, e.g. ``/tmp/x/xdma0``: the host opens ``xdma:///tmp/x/xdma0``.
    port : int
        The device's TCP port.
    host : str
    channel : int
        The XDMA channel in the pipes' names.
    connect_timeout : float
        Seconds to wait for the TCP connection.

    Members
    -------
    url : str
        ``xdma://<base>``, for :func:`zipml.host.devices.open_device`.
    h2c_path, c2h_path : str
    bytes_h2c, bytes_c2h : int
        Bytes moved so far towards the device and back.
    error : str or None
        Why the bridge stopped by itself (the device closed the connection, a socket error).
    """

    def __init__(self, base, port, *, host="127.0.0.1", channel=0, connect_timeout=10.0):
        self.base = str(base)
        self.url = f"xdma://{self.base}"
        self.h2c_path, self.c2h_path = xdma_paths(self.base, channel)
        self.bytes_h2c = self.bytes_c2h = 0
        self.error = None
        self._stop = threading.Event()
        self._created = []
        self._h2c = self._c2h = self._sock = None
        self._threads = []
        try:
            for path in (self.h2c_path, self.c2h_path):
                self._make_fifo(path)
            # Read-write: see the module's docstring.
            self._h2c = os.open(self.h2c_path, os.O_RDWR | os.O_NONBLOCK)
            self._c2h = os.open(self.c2h_path, os.O_RDWR | os.O_NONBLOCK)
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
            self._sock.settimeout(None)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for name, target in (("h2c", self._to_device), ("c2h", self._from_device)):
                thread = threading.Thread(target=target, name=f"zipml-fifo-bridge {name} "
                                          f"{self.base}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise

    def _make_fifo(self, path):
        try:
            os.mkfifo(path)
            self._created.append(path)
        except FileExistsError:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a named pipe",
                                      path) from None

    def _fail(self, reason):
        if not self._stop.is_set():
            self.error = reason
            self._stop.set()

    def _to_device(self):
        """h2c pipe -> socket. A blocking ``sendall``: a device that takes nothing stalls the
        host's writes once the pipe is full; :meth:`stop` shuts the socket down to end it."""
        poll = select.poll()
        poll.register(self._h2c, select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poll.poll(_POLL_MS):
                    continue
                try:
                    data = os.read(self._h2c, _CHUNK)
                except BlockingIOError:
                    continue
                if data:             # never empty: the bridge itself holds a writer open
                    self._sock.sendall(data)
                    self.bytes_h2c += len(data)
        except OSError as exc:
            self._fail(f"sending to the device: {exc}")

    def _from_device(self):
        """socket -> c2h pipe; while the pipe is full (the host is not reading) the device's
        responses wait in the socket, as a card's wait for the host."""
        sock_poll, pipe_poll = select.poll(), select.poll()
        sock_poll.register(self._sock, select.POLLIN)
        pipe_poll.register(self._c2h, select.POLLOUT)
        try:
            while not self._stop.is_set():
                if not sock_poll.poll(_POLL_MS):
                    continue
                data = self._sock.recv(_CHUNK)
                if not data:
                    self._fail("the device closed the connection")
                    return
                view = memoryview(data)
                while view and not self._stop.is_set():
                    if not pipe_poll.poll(_POLL_MS):
                        continue
                    try:
                        n = os.write(self._c2h, view)
                    except BlockingIOError:
                        continue
                    view = view[n:]
                    self.bytes_c2h += n
        except OSError as exc:
            self._fail(f"receiving from the device: {exc}")

    @property
    def running(self):
        """Whether both directions are still being copied."""
        return not self._stop.is_set() and all(t.is_alive() for t in self._threads)

    def stop(self, timeout=5.0):
        """Stop copying, join the threads, close the socket and the pipes' descriptors and
        remove the pipes this bridge created. Idempotent."""
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)     # wakes a blocked sendall
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"the bridge threads {alive} did not stop")
        self._threads = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for name in ("_h2c", "_c2h"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        while self._created:
            try:
                os.unlink(self._created.pop())
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"FifoBridge({self.url!r}, h2c {self.bytes_h2c} B, c2h {self.bytes_c2h} B)"


class XdmaVirtualBoard:
    """The virtual board served on XDMA-style pipes: a board process from
    :func:`zipml.sim.virtual_board.start_virtual_board` and a :class:`FifoBridge` to it.

    Members
    -------
    url : str
        ``xdma://<base>``.
    proc : subprocess.Popen
        The simulation (its output in ``proc.log``).
    port : int
        The board's TCP port (busy: the bridge is its client).
    bridge : FifoBridge
    """

    def __init__(self, proc, port, bridge):
        self.proc, self.port, self.bridge = proc, port, bridge
        self.url = bridge.url

    def stop(self):
        """Stop the bridge, then the board; return the board's exit status."""
        from zipml.sim.virtual_board import stop
        try:
            self.bridge.stop()
        finally:
            code = stop(self.proc)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_xdma_virtual_board(base, *, channel=0, timeout=1800, log=None, **params):
    """Start the virtual board and serve it on the pipes of ``base`` (created if missing, as its
    folder is); return an :class:`XdmaVirtualBoard` once ``xdma://<base>`` answers.

    ``timeout``, ``log`` and ``params`` (``width``, ``n_max``, ...) are
    :func:`~zipml.sim.virtual_board.start_virtual_board`'s; the first start of a configuration
    compiles it (minutes), later starts reuse the build.
    """
    from zipml.sim.virtual_board import start_virtual_board, stop
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    proc, port = start_virtual_board(timeout=timeout, log=log, **params)
    try:
        bridge = FifoBridge(base, port, channel=channel)
    except BaseException:
        stop(proc)
        raise
    return XdmaVirtualBoard(proc, port, bridge)
