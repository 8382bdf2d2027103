"""The protocol client: the golden device's methods, spoken over any transport.

:class:`DeviceClient` frames requests (:mod:`zipml.protocol`), waits for the matching response
with a timeout, retries with the same ``seq`` on CRC errors, NAKs (BUSY) and timeouts (the
device answers a repeated ``seq`` from its cache, so nothing runs twice) and turns refusals into
:class:`~zipml.sim.golden.DeviceError` subclasses. It does not know which transport it talks to
(:mod:`zipml.host.transport`).
"""

import time

import numpy as np

from zipml import contract, protocol
from zipml.contract import Encoding, LevelMode, Loss
from zipml.protocol import (
    MAX_PAYLOAD,
    Cmd,
    DeviceState,
    FrameDecoder,
    Status,
    encode_frame,
    pack_struct,
    struct_bytes,
    unpack_struct,
)
from zipml.sim.golden import Counters, DeviceError

__all__ = [
    "DeviceClient", "LinkError", "DeviceTimeout", "ProtocolError", "DeviceRefused",
    "BadStateError", "BadConfigError", "TooLargeError", "BadArgumentError", "BadLengthError",
    "UnknownCommandError",
]


class LinkError(DeviceError):
    """The link failed: responses that never arrive intact, a closed connection."""


class DeviceTimeout(LinkError):
    """Nothing (valid) arrived in time; the message names the command and the stage."""


class ProtocolError(DeviceError):
    """The device answered something the protocol does not allow (wrong size, wrong magic)."""


class DeviceRefused(DeviceError):
    """The device refused a request.

    Members
    -------
    status : Status
    cmd : Cmd
    """

    def __init__(self, message, status, cmd):
        super().__init__(message)
        self.status = status
        self.cmd = cmd


class BadStateError(DeviceRefused):
    """BAD_STATE: the command is not allowed in the device's state."""


class BadConfigError(DeviceRefused):
    """BAD_CONFIG: the device cannot do what was asked."""


class TooLargeError(DeviceRefused):
    """TOO_LARGE: more features, words or payload than the device holds."""


class BadArgumentError(DeviceRefused):
    """BAD_ARGUMENT: a payload field is out of range."""


class BadLengthError(DeviceRefused):
    """BAD_LENGTH: the payload has the wrong size for the command."""


class UnknownCommandError(DeviceRefused):
    """UNKNOWN_CMD: the device does not implement the command."""


_ERRORS = {
    Status.BAD_STATE: BadStateError, Status.BAD_CONFIG: BadConfigError,
    Status.TOO_LARGE: TooLargeError, Status.BAD_ARGUMENT: BadArgumentError,
    Status.BAD_LENGTH: BadLengthError, Status.UNKNOWN_CMD: UnknownCommandError,
}


def _names(members):
    return ", ".join(m.name for m in members) or "none"


class DeviceClient:
    """A device on the other end of ``transport``, with the golden model's methods.

    Parameters
    ----------
    transport
        A :class:`zipml.host.transport.Transport` (the client owns it and closes it).
    timeout : float
        Seconds to wait for each response.
    retries : int
        Extra attempts per request after a CRC error, a NAK or a timeout.
    busy_timeout : float
        Seconds to wait for a busy device (RUN_EPOCHS, a draining pipeline).
    max_payload : int, optional
        Cap on request payloads (smaller frames suffer less on a noisy link).

    Members
    -------
    info : dict
        The IDENTIFY reply; ``encodings``, ``level_modes`` and ``losses`` as lists of members.
    width, n_max, batch_max, memory_words : int
    config : TrainConfig or None
    stats : dict
        ``frames_sent``, ``frames_received``, ``bytes_sent``, ``bytes_received``, ``retries``,
        ``timeouts``, ``bad_crc``, ``naks``, ``stale`` (responses to other requests, ignored),
        ``polls``.
    """

    def __init__(self, transport, *, timeout=1.0, retries=3, busy_timeout=60.0,
                 max_payload=None):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.busy_timeout = busy_timeout
        self.stats = dict.fromkeys(
            ("frames_sent", "frames_received", "bytes_sent", "bytes_received", "retries",
             "timeouts", "bad_crc", "naks", "stale", "polls"), 0)
        self.config = None
        self._decoder = FrameDecoder(response=True)
        self._pending = []
        self._seq = 0
        try:
            self._drain()
            self.info = self.identify()
        except BaseException:
            transport.close()
            raise
        self.width = self.info["width"]
        self.n_max = self.info["n_max"]
        self.batch_max = self.info["batch_max"]
        self.memory_words = self.info["memory_words"]
        self.max_payload = min(self.info["max_payload"], MAX_PAYLOAD,
                               max_payload or MAX_PAYLOAD)

    # --- requests ----------------------------------------------------------------------------

    def _drain(self):
        """Discard whatever a previous session left in the input."""
        for _ in range(64):
            data = self.transport.read(1 << 16, 0)
            if not data:
                break
            self._decoder.feed(data)
        self._pending.clear()

    def request(self, cmd, payload=b""):
        """Send one request; return the OK reply's payload.

        Raises :class:`DeviceRefused` (a subclass per status) when the device refuses,
        :class:`DeviceTimeout` when no answer comes after ``retries`` extra attempts and
        :class:`LinkError` when every answer was a CRC error or a NAK.
        """
        cmd = Cmd(cmd)
        seq, self._seq = self._seq, (self._seq + 1) & 0xFF
        frame = encode_frame(cmd, seq, payload)
        what = f"{cmd.name} seq {seq}"
        failure = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            try:
                self.transport.write(frame)
            except DeviceTimeout as exc:
                raise DeviceTimeout(f"sending {what}: {exc}") from None
            self.stats["frames_sent"] += 1
            self.stats["bytes_sent"] += len(frame)
            response = self._wait(cmd, seq)
            if response is None:
                self.stats["timeouts"] += 1
                failure = "timeout"
            elif response.status == Status.BAD_CRC:
                self.stats["bad_crc"] += 1
                failure = "the device's BAD_CRC"
            elif response.status == Status.BUSY:
                self.stats["naks"] += 1
                failure = "the device's BUSY"
                time.sleep(min(0.01, self.timeout))
            elif response.status == Status.OK:
                return response.payload
            else:
                status = response.status
                name = status.name if isinstance(status, Status) else f"status 0x{status:02x}"
                cls = _ERRORS.get(status, DeviceRefused)
                raise cls(f"the device refused {what}: {name}", status, cmd)
        tries = f"{self.retries + 1} attempts"
        if failure == "timeout":
            raise DeviceTimeout(f"waiting for the response to {what}: nothing valid within "
                                f"{self.timeout} s, {tries} ({self.transport})")
        raise LinkError(f"{what} failed {tries}, the last with {failure} ({self.transport})")

    def _wait(self, cmd, seq):
        """The response to (cmd, seq), or None after ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        while True:
            while self._pending:
                frame = self._pending.pop(0)
                self.stats["frames_received"] += 1
                if frame.seq == seq and frame.cmd == cmd:
                    return frame
                self.stats["stale"] += 1
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            data = self.transport.read(1 << 16, left)
            if data:
                self.stats["bytes_received"] += len(data)
                self._pending.extend(self._decoder.feed(data))

    # --- commands ----------------------------------------------------------------------------

    def identify(self):
        """The device's parameters (the IDENTIFY reply as a dict)."""
        raw = self.request(Cmd.IDENTIFY)
        if len(raw) != struct_bytes(protocol.IdentifyReply):
            raise ProtocolError(f"IDENTIFY replied {len(raw)} bytes, not "
                                f"{struct_bytes(protocol.IdentifyReply)}")
        info = unpack_struct(protocol.IdentifyReply, raw)
        if info["magic"] != protocol.MAGIC:
            raise ProtocolError(f"IDENTIFY magic 0x{info['magic']:08x} is not a zipml device")
        if info["version"] != protocol.PROTOCOL_VERSION:
            raise ProtocolError(f"the device speaks protocol version {info['version']}, this "
                                f"host {protocol.PROTOCOL_VERSION}")
        info["encodings"] = protocol.from_bitmap(Encoding, info["encodings"])
        info["level_modes"] = protocol.from_bitmap(LevelMode, info["level_modes"])
        info["losses"] = protocol.from_bitmap(Loss, info["losses"])
        return info

    def status(self):
        """READ_STATUS as a dict (``state`` a :class:`~zipml.protocol.DeviceState`)."""
        return self._reply(Cmd.READ_STATUS, protocol.StatusReply)

    @property
    def counters(self):
        s = self.status()
        return Counters(rows=s["rows"], epochs=s["epochs"], saturated_rows=s["saturated_rows"])

    def reset(self):
        """Return the device to its power-up state."""
        self.request(Cmd.RESET)
        self.config = None

    def configure(self, config):
        """Send a :class:`~zipml.sim.golden.TrainConfig`, after checking the device can do it."""
        info, fmt = self.info, config.fmt
        config.check(self.n_max, self.batch_max)
        if fmt.encoding not in info["encodings"]:
            raise DeviceError(f"the device supports encodings {_names(info['encodings'])}, "
                              f"not {fmt.encoding.name}")
        if fmt.levels not in info["level_modes"]:
            raise DeviceError(f"the device supports level modes {_names(info['level_modes'])}, "
                              f"not {fmt.levels.name}")
        if config.loss not in info["losses"]:
            raise DeviceError(f"the device supports losses {_names(info['losses'])}, "
                              f"not {config.loss.name}")
        if fmt.bits > info["max_bits"]:
            raise DeviceError(f"the device supports up to {info['max_bits']} bits, "
                              f"not {fmt.bits}")
        if not contract.format_fits(self.width, fmt, info["lanes"]):
            fits = contract.fitting_bits(self.width, fmt.encoding, info["lanes"],
                                         info["max_bits"])
            hint = (f"{fmt.encoding.name} needs b in {fits[0]}..{fits[-1]}" if fits else
                    f"it cannot take {fmt.encoding.name}")
            raise DeviceError(
                f"{fmt.encoding.name} b={fmt.bits} puts "
                f"{contract.lanes_in_word(self.width, fmt)} fields in a {self.width}-bit word; "
                f"this device processes {info['lanes']} per word, so {hint}")
        try:
            payload = pack_struct(
                protocol.ConfigureRequest, n_features=config.n_features, batch=config.batch,
                rows_per_epoch=config.rows_per_epoch, lr=config.lr, encoding=fmt.encoding,
                bits=fmt.bits, levels=fmt.levels, loss=config.loss, delay=config.delay,
                lr_decay_epochs=config.lr_decay_epochs)
        except ValueError as exc:
            raise DeviceError(f"the configuration does not fit the protocol: {exc}") from None
        self.request(Cmd.CONFIGURE, payload)
        self.config = config
        self._row_words = contract.row_words(self.width, fmt, config.n_features)
        self._epoch_words = config.rows_per_epoch * self._row_words
        self._sent_words = 0

    def load_levels(self, table):
        """Load a level table (int16 entries)."""
        table = np.asarray(table, np.int64).reshape(-1)
        if table.size and (table.min() < -(1 << 15) or table.max() >= 1 << 15):
            raise DeviceError("level table entries must be 16-bit integers")
        self.request(Cmd.LOAD_LEVELS, table.astype("<i2").tobytes())

    def load_model(self, words):
        """Load model words (signed 32-bit, feature order), in as many frames as needed."""
        cfg = self._need_config()
        words = np.asarray(words, np.int64).reshape(-1)
        if words.shape != (cfg.n_features,):
            raise DeviceError(f"model has {words.size} words, expected {cfg.n_features}")
        lo, hi = contract.sat_limits(contract.MODEL_BITS)
        if words.min(initial=0) < lo or words.max(initial=0) > hi:
            raise DeviceError("model words must be signed 32-bit integers")
        head = struct_bytes(protocol.ModelOffset)
        step = (self.max_payload - head) // protocol.MODEL_WORD_BYTES
        for offset in range(0, len(words), step):
            chunk = words[offset:offset + step].astype("<i4").tobytes()
            self.request(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=offset) + chunk)

    def read_model(self):
        """The device's model words (int32, feature order)."""
        cfg = self._need_config()
        step = self.max_payload // protocol.MODEL_WORD_BYTES
        parts = []
        for offset in range(0, cfg.n_features, step):
            count = min(step, cfg.n_features - offset)
            raw = self.request(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest,
                                                           offset=offset, count=count))
            if len(raw) != count * protocol.MODEL_WORD_BYTES:
                raise ProtocolError(f"READ_MODEL of {count} words replied {len(raw)} bytes")
            parts.append(np.frombuffer(raw, "<i4"))
        return np.concatenate(parts).astype(np.int32)

    def process(self, words):
        """Stream packed rows (uint32 array (words, W // 32)); return the epoch snapshots.

        Frames never cross an epoch's end: after the frame that completes an epoch the client
        waits for the device to finish its rows and reads the model.
        """
        self._need_config()
        words = self._as_words(words)
        raw, wb = words.tobytes(), protocol.word_bytes(self.width)
        per_frame = self.max_payload // wb
        snapshots = []
        pos = 0
        while pos < len(words):
            to_end = self._epoch_words - self._sent_words % self._epoch_words
            take = min(per_frame, len(words) - pos, to_end)
            reply = self._reply(Cmd.TRAIN_STREAM, protocol.TrainStreamReply,
                                raw[pos * wb:(pos + take) * wb])
            pos += take
            self._sent_words += take
            if self._sent_words % self._epoch_words == 0:
                rows = self._sent_words // self._row_words
                if reply["rows"] < rows:
                    epoch = rows // self.config.rows_per_epoch
                    self._wait_for(lambda s, rows=rows: s["rows"] >= rows
                                   and s["state"] != DeviceState.BUSY,
                                   f"the device to finish epoch {epoch} ({rows} rows)")
                snapshots.append(self.read_model())
        return snapshots

    def run_epochs(self, words, epochs):
        """Resident mode: store the rows (STORE_DATA), then train ``epochs`` epochs over them
        (RUN_EPOCHS, one epoch at a time); return the snapshots."""
        cfg = self._need_config()
        words = self._as_words(words)
        n_rows = len(words) // self._row_words
        if n_rows != cfg.rows_per_epoch:
            raise DeviceError(f"stored data has {n_rows} rows, the epoch {cfg.rows_per_epoch}")
        if len(words) > self.memory_words:
            raise DeviceError(f"{len(words)} words do not fit the device's memory of "
                              f"{self.memory_words} words")
        if self._sent_words % self._epoch_words:
            raise DeviceError("RUN_EPOCHS needs an epoch boundary; the stream is mid-epoch")
        wb = protocol.word_bytes(self.width)
        head = struct_bytes(protocol.StoreDataHeader)
        step = (self.max_payload - head) // wb
        raw = words.tobytes()
        for offset in range(0, len(words), step):
            count = min(step, len(words) - offset)
            reply = self._reply(Cmd.STORE_DATA, protocol.StoreDataReply,
                                pack_struct(protocol.StoreDataHeader, offset=offset)
                                + raw[offset * wb:(offset + count) * wb])
            if reply["stored_words"] != offset + count:
                raise ProtocolError(f"STORE_DATA at {offset} left {reply['stored_words']} words")
        snapshots = []
        for epoch in range(epochs):
            self.request(Cmd.RUN_EPOCHS, pack_struct(protocol.RunEpochsRequest, epochs=1))
            self._wait_for(lambda s: s["state"] != DeviceState.BUSY,
                           f"RUN_EPOCHS to finish epoch {epoch + 1} of {epochs}")
            snapshots.append(self.read_model())
        return snapshots

    def close(self):
        """Close the transport."""
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- helpers -----------------------------------------------------------------------------

    def _need_config(self):
        if self.config is None:
            raise DeviceError("the device is not configured")
        return self.config

    def _as_words(self, words):
        words = np.ascontiguousarray(words, dtype="<u4")
        if words.ndim != 2 or words.shape[1] != self.width // 32:
            raise DeviceError(f"words must have shape (n, {self.width // 32}) for W = "
                              f"{self.width}, not {words.shape}")
        return words

    def _reply(self, cmd, layout, payload=b""):
        raw = self.request(cmd, payload)
        if len(raw) != struct_bytes(layout):
            raise ProtocolError(f"{cmd.name} replied {len(raw)} bytes, not "
                                f"{struct_bytes(layout)}")
        return unpack_struct(layout, raw)

    def _wait_for(self, done, stage):
        """Poll READ_STATUS until ``done(status)``; DeviceTimeout after ``busy_timeout``."""
        start = time.monotonic()
        interval = 0.0002
        while True:
            s = self.status()
            self.stats["polls"] += 1
            if done(s):
                return s
            waited = time.monotonic() - start
            if waited > self.busy_timeout:
                state = getattr(s["state"], "name", s["state"])
                raise DeviceTimeout(f"waiting for {stage}: still {state} after "
                                    f"{waited:.1f} s ({s['rows']} rows, {s['epochs']} epochs)")
            time.sleep(interval)
            interval = min(2 * interval, 0.05)
