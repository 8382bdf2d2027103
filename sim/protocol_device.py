"""The device's command dispatcher in Python: the protocol of :mod:`zipml.protocol` around the
golden model.

:class:`ProtocolDevice` takes request bytes and returns response bytes, validating every payload
and enforcing the state machine of the protocol's module docstring. It is the executable
specification the gateware dispatcher is tested against, and the in-process device behind
``inproc``. :meth:`ProtocolDevice.serve_tcp` and :meth:`ProtocolDevice.serve_fifos` put it behind
a TCP socket (``socket://HOST:PORT`` for pyserial) or a pair of named pipes (standing in for the
XDMA character devices), where a virtual board can later take its place.
"""

import errno
import os
import select
import socket
import threading
import time

import numpy as np

from zipml import contract, protocol
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.protocol import (
    MAX_PAYLOAD,
    RX_TIMEOUT,
    Cmd,
    DeviceState,
    FrameDecoder,
    Status,
    encode_response,
    pack_struct,
    struct_bytes,
    unpack_struct,
)
from zipml.sim.golden import Counters, DeviceError, GoldenDevice, TrainConfig

__all__ = ["ProtocolDevice", "Refused", "Server"]

_ANY = {Cmd.IDENTIFY, Cmd.READ_STATUS, Cmd.RESET}
_NOT_BUSY = {Cmd.CONFIGURE, Cmd.LOAD_LEVELS, Cmd.STORE_DATA}
_CONFIGURED = {Cmd.LOAD_MODEL, Cmd.READ_MODEL, Cmd.TRAIN_STREAM}
_IDLE = {Cmd.RUN_EPOCHS}
_MW = protocol.MODEL_WORD_BYTES
_LE = protocol.LEVEL_ENTRY_BYTES


class Refused(Exception):
    """A request the device answers with ``status`` (``reason`` stays on the device side)."""

    def __init__(self, status, reason):
        super().__init__(f"{status.name}: {reason}")
        self.status = status
        self.reason = reason


class ProtocolDevice:
    """The protocol dispatcher around a :class:`~zipml.sim.golden.GoldenDevice`.

    Parameters
    ----------
    golden : GoldenDevice
        The arithmetic; its ``width``, ``n_max`` and ``batch_max`` are the device's.
    memory_words : int
        Resident memory for STORE_DATA, in W-bit words.
    max_payload : int
        The largest request payload accepted (TOO_LARGE beyond).
    encodings, level_modes, losses : iterables of the contract's enums
        What this device supports (a smaller build refuses the rest with BAD_CONFIG).
    lanes : int
        Fields per cycle the device processes (default: its W); formats it cannot take
        (:func:`zipml.contract.format_fits`) are refused with BAD_CONFIG, as a smaller build
        does.
    max_bits : int
    clock_hz, baud, build_id : int
        Reported by IDENTIFY.
    epochs_per_poll : int or None
        None: RUN_EPOCHS trains all its epochs at once. k: the device stays BUSY and trains k
        epochs at each READ_STATUS, so hosts and tests see a busy device.

    Members
    -------
    stats : dict
        ``executed`` requests, ``retries`` answered from the cache, ``refused`` requests,
        ``rejected`` frames (bad CRC, length, too large).
    last_reason : str
        Why the last refused request was refused (for debugging; not on the wire).
    """

    def __init__(self, golden=None, *, memory_words=1 << 16, max_payload=MAX_PAYLOAD,
                 encodings=tuple(Encoding), level_modes=tuple(LevelMode), losses=tuple(Loss),
                 max_bits=contract.MAX_BITS, clock_hz=0, baud=0, build_id=0,
                 epochs_per_poll=None, lanes=None):
        self.golden = golden if golden is not None else GoldenDevice()
        if not 0 < max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be within 1..{MAX_PAYLOAD}")
        self.memory_words = memory_words
        self.max_payload = max_payload
        self.encodings = frozenset(Encoding(e) for e in encodings)
        self.level_modes = frozenset(LevelMode(m) for m in level_modes)
        self.losses = frozenset(Loss(x) for x in losses)
        self.max_bits = max_bits
        self.lanes = self.golden.width if lanes is None else lanes
        self.clock_hz, self.baud, self.build_id = clock_hz, baud, build_id
        self.epochs_per_poll = epochs_per_poll
        self.stats = dict.fromkeys(("executed", "retries", "refused", "rejected"), 0)
        self.last_reason = ""
        self._decoder = FrameDecoder(report_errors=True, max_payload=max_payload)
        self._last = None
        self._memory = None
        self._power_up()

    @property
    def width(self):
        return self.golden.width

    @property
    def word_bytes(self):
        return protocol.word_bytes(self.golden.width)

    def _power_up(self):
        g = self.golden
        g.config, g.table, g.counters = None, None, Counters()
        g.model = np.zeros(0, np.int64)
        self.stored_words = 0
        self.cycles = 0
        self.last_error, self.last_error_cmd = Status.OK, 0
        self._epoch_pos = 0           # words of the current epoch received by TRAIN_STREAM
        self._epochs_left = 0

    @property
    def state(self):
        """The :class:`~zipml.protocol.DeviceState`."""
        if self._epochs_left:
            return DeviceState.BUSY
        if self.golden.config is None:
            return DeviceState.UNCONFIGURED
        return DeviceState.STREAMING if self._epoch_pos else DeviceState.IDLE

    # --- bytes in, bytes out ---------------------------------------------------------------

    def feed(self, data):
        """Consume request bytes; return the response bytes they caused."""
        out = bytearray()
        for frame in self._decoder.feed(data):
            out += self._answer(frame)
        return bytes(out)

    def line_idle(self):
        """The line has been silent for ``RX_TIMEOUT``: drop a partial frame."""
        self._decoder.timeout()

    def _answer(self, frame):
        if frame.status is not None:
            self.stats["rejected"] += 1
            return encode_response(frame.status, frame.cmd, frame.seq)
        if self._last is not None and self._last[:2] == (frame.cmd, frame.seq):
            self.stats["retries"] += 1
            return self._last[2]
        try:
            payload = self.execute(frame.cmd, frame.payload)
            response = encode_response(Status.OK, frame.cmd, frame.seq, payload)
            self.stats["executed"] += 1
        except Refused as exc:
            self.stats["refused"] += 1
            self.last_error = exc.status
            self.last_error_cmd = protocol._int(frame.cmd)
            self.last_reason = exc.reason
            response = encode_response(exc.status, frame.cmd, frame.seq)
        self._last = (frame.cmd, frame.seq, response)
        return response

    # --- commands --------------------------------------------------------------------------

    def execute(self, cmd, payload):
        """Run one request; return the OK reply payload or raise :class:`Refused`.

        Every check comes before any change, so a refused request changes nothing.
        """
        if not isinstance(cmd, Cmd):
            raise Refused(Status.UNKNOWN_CMD, f"unknown command 0x{cmd:02x}")
        state = self.state
        allowed = cmd in _ANY or (
            state != DeviceState.BUSY and cmd in _NOT_BUSY) or (
            state in (DeviceState.IDLE, DeviceState.STREAMING) and cmd in _CONFIGURED) or (
            state == DeviceState.IDLE and cmd in _IDLE)
        if not allowed:
            raise Refused(Status.BAD_STATE, f"{cmd.name} is not allowed while {state.name}")
        return getattr(self, "_cmd_" + cmd.name.lower())(bytes(payload))

    def _cmd_identify(self, payload):
        _length(payload, 0)
        return protocol.identify_reply(
            encodings=self.encodings, level_modes=self.level_modes, losses=self.losses,
            max_bits=self.max_bits, width=self.golden.width, lanes=self.lanes,
            n_max=self.golden.n_max, batch_max=self.golden.batch_max,
            max_payload=self.max_payload, memory_words=self.memory_words,
            clock_hz=self.clock_hz, baud=self.baud, build_id=self.build_id)

    def _cmd_configure(self, payload):
        f = unpack_struct(protocol.ConfigureRequest,
                          _length(payload, struct_bytes(protocol.ConfigureRequest)))
        g = self.golden
        if f["n_features"] > g.n_max:
            raise Refused(Status.TOO_LARGE, f"n_features={f['n_features']} > n_max={g.n_max}")
        checks = [
            (f["n_features"] >= 1, "n_features must be at least 1"),
            (f["rows_per_epoch"] >= 1, "rows_per_epoch must be at least 1"),
            (f["lr"] >= 1, "lr must not be 0"),
            (f["encoding"] in {e.value for e in self.encodings},
             f"encoding {f['encoding']} is not supported"),
            (f["levels"] in {m.value for m in self.level_modes},
             f"level mode {f['levels']} is not supported"),
            (f["loss"] in {x.value for x in self.losses}, f"loss {f['loss']} is not supported"),
            (1 <= f["bits"] <= min(self.max_bits, contract.MAX_BITS),
             f"bits={f['bits']} is outside 1..{self.max_bits}"),
            (1 <= f["batch"] <= g.batch_max, f"batch={f['batch']} is outside 1..{g.batch_max}"),
            (f["delay"] <= 1, f"delay={f['delay']} is not 0 or 1"),
        ]
        for ok, reason in checks:
            if not ok:
                raise Refused(Status.BAD_CONFIG, reason)
        try:
            fmt = Format(Encoding(f["encoding"]), f["bits"], LevelMode(f["levels"]))
            if not contract.format_fits(g.width, fmt, self.lanes):
                raise ValueError(f"{fmt.encoding.name} b={fmt.bits} puts "
                                 f"{contract.lanes_in_word(g.width, fmt)} fields in a word, "
                                 f"more than this device's {self.lanes} lanes")
            cfg = TrainConfig(n_features=f["n_features"], rows_per_epoch=f["rows_per_epoch"],
                              fmt=fmt, loss=Loss(f["loss"]), lr=f["lr"],
                              lr_decay_epochs=f["lr_decay_epochs"], batch=f["batch"],
                              delay=f["delay"])
            cfg.check(g.n_max, g.batch_max)
        except (ValueError, DeviceError) as exc:
            raise Refused(Status.BAD_CONFIG, str(exc)) from None
        g.configure(cfg)
        self._epoch_pos = 0
        self.cycles = 0
        return b""

    def _model_range(self, offset, count):
        n = self.golden.config.n_features
        if offset + count > n:
            raise Refused(Status.BAD_ARGUMENT,
                          f"model words {offset}..{offset + count - 1} beyond n_features={n}")

    def _cmd_load_model(self, payload):
        head = struct_bytes(protocol.ModelOffset)
        if len(payload) < head or (len(payload) - head) % _MW:
            raise Refused(Status.BAD_LENGTH, f"LOAD_MODEL payload of {len(payload)} bytes")
        offset = unpack_struct(protocol.ModelOffset, payload[:head])["offset"]
        words = np.frombuffer(payload[head:], "<i4").astype(np.int64)
        self._model_range(offset, len(words))
        model = self.golden.read_model().astype(np.int64)
        model[offset:offset + len(words)] = words
        self.golden.load_model(model)
        return b""

    def _cmd_read_model(self, payload):
        f = unpack_struct(protocol.ReadModelRequest,
                          _length(payload, struct_bytes(protocol.ReadModelRequest)))
        if f["count"] * _MW > self.max_payload:
            raise Refused(Status.TOO_LARGE, f"{f['count']} words exceed the payload limit")
        self._model_range(f["offset"], f["count"])
        model = self.golden.read_model()[f["offset"]:f["offset"] + f["count"]]
        return model.astype("<i4").tobytes()

    def _cmd_load_levels(self, payload):
        if LevelMode.TABLE not in self.level_modes:
            raise Refused(Status.BAD_CONFIG, "this device has no level tables")
        if len(payload) % _LE:
            raise Refused(Status.BAD_LENGTH, f"LOAD_LEVELS payload of {len(payload)} bytes")
        table = np.frombuffer(payload, "<i2")
        n = len(table)
        if not 4 <= n <= 1 << self.max_bits or n & (n - 1):
            raise Refused(Status.BAD_ARGUMENT, f"a table of {n} entries")
        try:
            self.golden.load_levels(table.tolist())
        except DeviceError as exc:
            raise Refused(Status.BAD_ARGUMENT, str(exc)) from None
        return b""

    def _need_table(self):
        fmt = self.golden.config.fmt
        if fmt.levels == LevelMode.TABLE and fmt.encoding != Encoding.RAW:
            table = self.golden.table
            if table is None or len(table) != fmt.n_levels:
                raise Refused(Status.BAD_STATE, f"the format needs a table of {fmt.n_levels}")

    def _words(self, raw):
        return np.frombuffer(raw, "<u4").reshape(-1, self.golden.width // 32)

    def _epoch_words(self):
        cfg = self.golden.config
        return cfg.rows_per_epoch * contract.row_words(self.golden.width, cfg.fmt,
                                                       cfg.n_features)

    def _cmd_train_stream(self, payload):
        if len(payload) % self.word_bytes:
            raise Refused(Status.BAD_LENGTH, f"{len(payload)} bytes is not whole words")
        self._need_table()
        words = self._words(payload)
        self.golden.process(words)
        self._epoch_pos = (self._epoch_pos + len(words)) % self._epoch_words()
        self.cycles += len(words)
        c = self.golden.counters
        return pack_struct(protocol.TrainStreamReply, rows=c.rows, epochs=c.epochs)

    def _cmd_store_data(self, payload):
        head = struct_bytes(protocol.StoreDataHeader)
        if len(payload) < head or (len(payload) - head) % self.word_bytes:
            raise Refused(Status.BAD_LENGTH, f"STORE_DATA payload of {len(payload)} bytes")
        offset = unpack_struct(protocol.StoreDataHeader, payload[:head])["offset"]
        words = self._words(payload[head:])
        if offset > self.stored_words:
            raise Refused(Status.BAD_ARGUMENT,
                          f"offset {offset} leaves a hole after {self.stored_words} words")
        end = offset + len(words)
        if end > self.memory_words:
            raise Refused(Status.TOO_LARGE, f"{end} words exceed memory of {self.memory_words}")
        if self._memory is None:
            self._memory = np.zeros((self.memory_words, self.golden.width // 32), np.uint32)
        self._memory[offset:end] = words
        self.stored_words = end
        return pack_struct(protocol.StoreDataReply, stored_words=end)

    def _cmd_run_epochs(self, payload):
        f = unpack_struct(protocol.RunEpochsRequest,
                          _length(payload, struct_bytes(protocol.RunEpochsRequest)))
        if f["epochs"] < 1:
            raise Refused(Status.BAD_ARGUMENT, "epochs must be at least 1")
        self._need_table()
        if self.stored_words != self._epoch_words():
            raise Refused(Status.BAD_STATE, f"{self.stored_words} stored words are not one "
                                            f"epoch of {self._epoch_words()}")
        self._epochs_left = f["epochs"]
        if self.epochs_per_poll is None:
            self._advance()
        return b""

    def _advance(self):
        """Train the next epochs of a RUN_EPOCHS."""
        k = self._epochs_left if self.epochs_per_poll is None \
            else min(self.epochs_per_poll, self._epochs_left)
        self.golden.run_epochs(self._memory[:self.stored_words], k)
        self.cycles += k * self.stored_words
        self._epochs_left -= k

    def _cmd_read_status(self, payload):
        _length(payload, 0)
        if self._epochs_left:
            self._advance()
        c = self.golden.counters
        return pack_struct(
            protocol.StatusReply, state=self.state, last_error=self.last_error,
            last_error_cmd=self.last_error_cmd, flags=int(self.golden.table is not None),
            rows=c.rows, epochs=c.epochs, saturated_rows=c.saturated_rows,
            stored_words=self.stored_words, epochs_left=self._epochs_left, cycles=self.cycles)

    def _cmd_reset(self, payload):
        _length(payload, 0)
        self._power_up()
        return b""

    # --- serving -----------------------------------------------------------------------------

    def serve_tcp(self, port=0, host="127.0.0.1"):
        """Serve the protocol on a TCP port (0 picks a free one), one client at a time.

        Returns a running :class:`Server`; ``server.url`` is ``socket://HOST:PORT``.
        """
        return Server(self, _TcpLink(host, port))

    def serve_fifos(self, h2c_path, c2h_path):
        """Serve the protocol on two named pipes: requests from ``h2c_path``, responses to
        ``c2h_path`` (stand-ins for the XDMA character devices). Returns a running
        :class:`Server`."""
        return Server(self, _FifoLink(h2c_path, c2h_path))


def _length(payload, n):
    if len(payload) != n:
        raise Refused(Status.BAD_LENGTH, f"payload of {len(payload)} bytes, expected {n}")
    return payload


class Server:
    """A :class:`ProtocolDevice` served on a link by a thread; stop it with :meth:`stop` (or use
    it as a context manager).

    Members
    -------
    url : str
        Where a host connects (``socket://...`` for TCP, the h2c path for pipes).
    connections : int
        Clients served so far.
    """

    def __init__(self, device, link):
        self.device = device
        self._link = link
        self.url = link.url
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"zipml-serve {self.url}",
                                        daemon=True)
        self._thread.start()

    @property
    def port(self):
        return self._link.port

    def _run(self):
        try:
            while not self._stop.is_set():
                if not self._link.accept(self._stop):
                    continue
                self.connections += 1
                self.device.line_idle()
                self._serve()
                self._link.hang_up()
        finally:
            self._link.close()

    def _serve(self):
        partial = False
        while not self._stop.is_set():
            data = self._link.recv(RX_TIMEOUT)
            if data is None:                 # the client went away
                return
            if not data:
                if partial:
                    self.device.line_idle()
                    partial = False
                continue
            partial = True
            out = self.device.feed(data)
            if out and not self._link.send(out, self._stop):
                return

    def stop(self, timeout=5.0):
        """Stop serving, close the link and join the thread."""
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the server on {self.url} did not stop")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _TcpLink:
    def __init__(self, host, port):
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._conn = None

    def accept(self, stop):
        try:
            conn, _ = self._listener.accept()
        except TimeoutError:
            return False
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(1.0)
        self._conn = conn
        return True

    def recv(self, timeout):
        ready, _, _ = select.select([self._conn], [], [], timeout)
        if not ready:
            return b""
        try:
            data = self._conn.recv(1 << 16)
        except OSError:
            return None
        return data or None

    def send(self, data, stop):
        try:
            self._conn.sendall(data)
            return True
        except OSError:
            return False

    def hang_up(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self):
        self.hang_up()
        self._listener.close()


class _FifoLink:
    """Both pipes are held open read-write, so opening them never blocks either side and the
    device never sees an end of file: like a PCIe device, it just serves a byte stream."""

    port = None

    def __init__(self, h2c_path, c2h_path):
        self.url = str(h2c_path)
        self._rx = os.open(h2c_path, os.O_RDWR | os.O_NONBLOCK)
        self._tx = os.open(c2h_path, os.O_RDWR | os.O_NONBLOCK)
        self._poll = select.poll()
        self._poll.register(self._rx, select.POLLIN)
        self._accepted = False

    def accept(self, stop):
        if self._accepted:
            time.sleep(0.05)
            return False
        self._accepted = True
        return True

    def recv(self, timeout):
        if not self._poll.poll(timeout * 1000):
            return b""
        try:
            return os.read(self._rx, 1 << 16)
        except BlockingIOError:
            return b""

    def send(self, data, stop):
        view = memoryview(data)
        while view and not stop.is_set():
            try:
                view = view[os.write(self._tx, view):]
            except BlockingIOError:
                time.sleep(0.001)          # the host is not reading: a device would stall
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    return False
                raise
        return True

    def hang_up(self):
        pass

    def close(self):
        for fd in (self._rx, self._tx):
            try:
                os.close(fd)
            except OSError:
                pass
