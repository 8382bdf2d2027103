"""The command protocol between host and device: framing, CRC, commands and status codes.

Gateware (:mod:`zipml.hw.framing`), the virtual device and the host client all import this
module; nothing here is copied elsewhere as a literal.

Frame format
------------
A frame on the wire is a SLIP-style (RFC 1055) byte-stuffed *body* between two delimiters::

    FEND  stuff(body)  FEND                       FEND = 0xC0

    request body:   cmd  seq  len_lo len_hi  payload[len]  crc_lo crc_hi
    response body:  status  cmd  seq  len_lo len_hi  payload[len]  crc_lo crc_hi

- ``cmd`` is a :class:`Cmd`, ``status`` a :class:`Status`, ``seq`` any byte chosen by the host
  (the response echoes ``cmd`` and ``seq``), ``len`` the payload length (16 bit, little endian).
- ``crc`` is CRC-16/IBM-SDLC (the X.25/HDLC frame check sequence: CCITT polynomial 0x1021,
  reflected, init and xor-out 0xFFFF, check value 0x906E) over every body byte before it, sent
  little endian. :data:`CRC` is the one definition: hardware builds its
  :class:`amaranth.lib.crc.Processor` from it and Python calls its ``compute()``.
- Stuffing: a body byte 0xC0 is sent as ``FESC TFEND`` (0xDB 0xDC), 0xDB as ``FESC TFESC``
  (0xDB 0xDD). FEND therefore never occurs inside a body, and any FEND ends whatever came before.

Resynchronisation (the same rules in gateware and in :class:`FrameDecoder`):

- A receiver starts *hunting*: it discards bytes until a FEND. It hunts again after a line
  silence of :data:`RX_TIMEOUT` seconds (dropping any partial frame) and after an invalid escape
  (``FESC`` followed by anything but TFEND/TFESC). Senders therefore always open a frame with a
  FEND, and close it with one.
- Between two FENDs: nothing (idle, ignored); fewer than header + CRC bytes (a *runt*: dropped
  silently); more than a 16-bit length can describe (BAD_LENGTH); a CRC mismatch (BAD_CRC);
  ``len`` different from the payload received (BAD_LENGTH); a payload longer than the
  receiver's maximum (TOO_LARGE).
- A device answers BAD_CRC, BAD_LENGTH and TOO_LARGE with an empty response echoing ``cmd`` and
  ``seq`` as received (they may themselves be corrupted: a host only trusts a response whose
  ``seq`` it is waiting for, and retries on BAD_CRC or on its own timeout). A frame that fails
  its checks leaves no trace in device state. Runts, escape errors and timeouts get no answer.
- A retried command reaches the device twice if only the response was lost. The device keeps
  the last request's ``cmd`` and ``seq`` and its response: a good request with the same ``cmd``
  and ``seq`` is a *retry*, answered with the cached response and not executed again (so retries
  of TRAIN_STREAM, STORE_DATA, LOAD_MODEL and RUN_EPOCHS are safe). Frames rejected by the checks
  above are never cached. A host therefore uses a new ``seq`` for every new request (it counts
  modulo 256) and opens a session with IDENTIFY, which is harmless to repeat and makes the
  session's next request fresh whatever the device saw last.

Every frame is checked by the CRC, so a frame that survives has passed CRC-16 with Hamming
distance 4 as long as its body stays within 32,751 bits: hence :data:`MAX_PAYLOAD`.

Commands
--------
Payload layouts are the :class:`amaranth.lib.data.Struct` classes below, sent least significant
byte first (:func:`pack_struct`, :func:`unpack_struct`); the gateware parses them with the same
classes. A *word* is W/8 bytes, little endian (limb 0 first); model words are int32, level table
entries int16, both little endian. Error responses (any status but OK) have an empty payload.

============  ===============================================  ==========================
command       request payload                                  OK response payload
============  ===============================================  ==========================
IDENTIFY      empty                                            :class:`IdentifyReply`
CONFIGURE     :class:`ConfigureRequest`                        empty
LOAD_MODEL    :class:`ModelOffset` + int32 words               empty
READ_MODEL    :class:`ReadModelRequest`                        ``count`` int32 words
LOAD_LEVELS   int16 entries (the whole table, 2**b entries)    empty
TRAIN_STREAM  whole words of packed rows                       :class:`TrainStreamReply`
STORE_DATA    :class:`StoreDataHeader` + words                 :class:`StoreDataReply`
RUN_EPOCHS    :class:`RunEpochsRequest`                        empty
READ_STATUS   empty                                            :class:`StatusReply`
RESET         empty                                            empty
============  ===============================================  ==========================

- CONFIGURE validates every field before changing anything: ``n_features`` above ``n_max`` is
  TOO_LARGE; an encoding, level mode, loss, ``bits`` or ``batch`` the device does not support,
  a format with more fields per word than the device's ``lanes``,
  ``n_features``, ``rows_per_epoch`` or ``lr`` of 0, a TABLE mode with fewer than 2 bits or
  ``delay`` > 1 is BAD_CONFIG. On success the model is zeroed, the counters cleared and the
  stream starts at row 0 of epoch 0; the level table and the stored data are kept.
- LOAD_MODEL writes words ``offset ..``; READ_MODEL reads ``count`` words from ``offset``; both
  need ``offset + count <= n_features`` (BAD_ARGUMENT) and READ_MODEL's reply must fit the
  device's payload limit (TOO_LARGE).
- LOAD_LEVELS takes a table of 4 .. 2**max_bits entries, a power of two, strictly increasing,
  each within ±TABLE_MAX (BAD_ARGUMENT otherwise; BAD_CONFIG if the device has no tables).
- TRAIN_STREAM's payload is whole words (BAD_LENGTH otherwise); a row may span frames. The reply
  carries the rows and epochs completed so far, which may lag the words sent while the pipeline
  drains (the state is then BUSY). Epochs end every ``rows_per_epoch`` rows; the host reads the
  model between frames to take a snapshot.
- STORE_DATA writes words at word ``offset`` of the resident memory; ``offset`` must not exceed
  the stored words (no holes: BAD_ARGUMENT) and ``offset + count`` must fit ``memory_words``
  (TOO_LARGE). The stored data then ends at ``offset + count``: writing at 0 starts a new set.
- RUN_EPOCHS trains ``epochs`` (>= 1, else BAD_ARGUMENT) epochs over the stored words, which must
  hold exactly one epoch of rows, at an epoch boundary of the stream (BAD_STATE otherwise). It
  answers at once; the device is BUSY until done and the host polls READ_STATUS.
- READ_STATUS reports the state, counters and the last error; RESET returns to the power-up
  state (unconfigured, no table, no stored data, counters zero).

State machine
-------------
:class:`DeviceState` UNCONFIGURED (power-up, after RESET), IDLE (configured, at an epoch
boundary), STREAMING (configured, inside an epoch of TRAIN_STREAM rows) and BUSY (training that
the host waits for). Allowed commands, BAD_STATE otherwise:

- any state: IDENTIFY, READ_STATUS, RESET;
- not BUSY: CONFIGURE, LOAD_LEVELS, STORE_DATA;
- IDLE or STREAMING: LOAD_MODEL, READ_MODEL, TRAIN_STREAM (a TABLE format also needs a loaded
  table of 2**b entries);
- IDLE: RUN_EPOCHS (also needs the table, as above).

A request refused with any status leaves the device's state as it was; READ_STATUS reports the
refusal in ``last_error`` and ``last_error_cmd`` until the next RESET.
"""

import binascii
from dataclasses import dataclass

from amaranth.lib import data, enum
from amaranth.lib.crc import catalog

from . import contract

__all__ = [
    "FEND", "FESC", "TFEND", "TFESC", "CRC", "CRC_BYTES", "REQUEST_HEADER_BYTES",
    "RESPONSE_HEADER_BYTES", "MAX_PAYLOAD", "RX_TIMEOUT", "Cmd", "Status", "Header",
    "crc16", "stuff", "encode_frame", "encode_response", "Frame", "FrameDecoder",
    "decode_frame", "MAGIC", "PROTOCOL_VERSION", "MODEL_WORD_BYTES", "LEVEL_ENTRY_BYTES",
    "DeviceState", "ConfigureRequest", "IdentifyReply", "ModelOffset", "ReadModelRequest",
    "TrainStreamReply", "StoreDataHeader", "StoreDataReply", "RunEpochsRequest", "StatusReply",
    "REQUEST_LAYOUTS", "REPLY_LAYOUTS", "struct_bytes", "pack_struct", "identify_reply",
    "unpack_struct", "word_bytes", "to_bitmap", "from_bitmap",
]

#: Frame delimiter, escape byte, and the transposed bytes that follow an escape.
FEND, FESC, TFEND, TFESC = 0xC0, 0xDB, 0xDC, 0xDD
_FEND, _FESC = bytes((FEND,)), bytes((FESC,))

#: CRC-16/IBM-SDLC (X.25) with 8-bit data words. ``CRC.compute(b"123456789") == 0x906E``.
CRC = catalog.CRC16_IBM_SDLC(8)
CRC_BYTES = 2

#: Body bytes before the payload: cmd, seq, len (request); status, cmd, seq, len (response).
REQUEST_HEADER_BYTES = 4
RESPONSE_HEADER_BYTES = 5

#: The largest payload the protocol allows (header + payload + CRC <= 32,751 bits). A device may
#: accept less (it reports TOO_LARGE beyond its own limit).
MAX_PAYLOAD = 4088

#: Seconds of line silence after which a receiver drops a partial frame and hunts for a FEND.
RX_TIMEOUT = 10e-3


class Cmd(enum.Enum, shape=8):
    """Request commands."""
    IDENTIFY = 0x01      #: report the device's parameters
    CONFIGURE = 0x02     #: set format, loss, learning rate, number of features, ...
    LOAD_MODEL = 0x03    #: write model words
    READ_MODEL = 0x04    #: read model words back
    LOAD_LEVELS = 0x05   #: write a level table
    TRAIN_STREAM = 0x06  #: train on the rows carried in the payload
    STORE_DATA = 0x07    #: append the rows in the payload to on-device memory
    RUN_EPOCHS = 0x08    #: train for a number of epochs on the stored rows
    READ_STATUS = 0x09   #: counters, state, error flags
    RESET = 0x0A         #: return to the power-up state


class Status(enum.Enum, shape=8):
    """Response status codes."""
    OK = 0x00
    BAD_CRC = 0x01       #: the request failed its CRC (nothing was done)
    BAD_LENGTH = 0x02    #: ``len`` disagrees with the payload received, or the payload has
                         #: the wrong size for the command
    UNKNOWN_CMD = 0x03
    BAD_STATE = 0x04     #: the command is not allowed now (e.g. training before CONFIGURE)
    BAD_CONFIG = 0x05    #: CONFIGURE asked for something this device cannot do
    TOO_LARGE = 0x06     #: payload or data set larger than the device accepts
    BUSY = 0x07          #: no room to take the frame now (nothing was done); retry
    BAD_ARGUMENT = 0x08  #: a payload field is out of range


class Header(data.Struct):
    """A frame header as gateware sees it; its bytes, least significant first, are the
    response header on the wire (a request header is the same without ``status``).

    Members
    -------
    status : Status
        Response status; from :class:`~zipml.hw.framing.FrameReceiver`, its verdict on the frame.
    cmd : Cmd
    seq : unsigned(8)
    length : unsigned(16)
        Payload length in bytes.
    """
    status: Status
    cmd: Cmd
    seq: 8
    length: 16


# CRC-16/IBM-SDLC is the bit-reflected form of CRC-16/XMODEM with the same polynomial and an
# initial value of 0xFFFF (symmetric under reflection): reflect the input bytes, run the C
# implementation in binascii, reflect the result and apply xor-out. Checked against CRC below.
_REVERSE_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc16(body):
    """The frame CRC of ``body`` (an iterable of bytes), as an integer; equals
    ``CRC.compute(body)``, at C speed."""
    raw = binascii.crc_hqx(bytes(body).translate(_REVERSE_BITS), 0xFFFF)
    return int(f"{raw:016b}"[::-1], 2) ^ 0xFFFF


assert all(crc16(v) == CRC.compute(v) for v in (b"", b"123456789", bytes(range(256)))), \
    "crc16 disagrees with the CRC definition"


def stuff(body):
    """Escape FEND and FESC in ``body`` (no delimiters added)."""
    return bytes(body).replace(_FESC, bytes((FESC, TFESC))).replace(_FEND, bytes((FESC, TFEND)))


def _int(value):
    return value.value if isinstance(value, enum.Enum) else int(value)


def _frame(header, payload):
    payload = bytes(payload)
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a 16-bit length")
    body = bytes(header) + len(payload).to_bytes(2, "little") + payload
    return bytes((FEND,)) + stuff(body + crc16(body).to_bytes(2, "little")) + bytes((FEND,))


def encode_frame(cmd, seq, payload=b""):
    """Encode a request frame, delimiters included.

    Parameters
    ----------
    cmd : Cmd or int
    seq : int
        0..255.
    payload : bytes-like
    """
    return _frame((_int(cmd), seq & 0xFF), payload)


def encode_response(status, cmd, seq, payload=b""):
    """Encode a response frame, delimiters included (what the device sends)."""
    return _frame((_int(status), _int(cmd), seq & 0xFF), payload)


def _as(enum_cls, value):
    try:
        return enum_cls(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class Frame:
    """A decoded frame.

    Members
    -------
    cmd : Cmd or int
        An int when the value is not a known :class:`Cmd`.
    seq : int
    payload : bytes
        Empty for rejected frames.
    status : Status or int or None
        Responses: the status sent. Requests: None for a good frame, else the verdict a device
        answers with (BAD_CRC, BAD_LENGTH, TOO_LARGE); only reported with ``report_errors``.
    """
    cmd: object
    seq: int
    payload: bytes = b""
    status: object = None


class FrameDecoder:
    """Incremental frame decoder: feed it bytes, get frames.

    Follows the resynchronisation rules of the module docstring. Call :meth:`timeout` when the
    line has been silent for :data:`RX_TIMEOUT`.

    Parameters
    ----------
    response : bool
        Decode responses (with a status byte) instead of requests.
    max_payload : int
        Payloads longer than this are rejected (TOO_LARGE).
    report_errors : bool
        Also return frames rejected with BAD_CRC/BAD_LENGTH/TOO_LARGE (``status`` set, empty
        payload), as a device must answer them. Otherwise they are only counted.

    Members
    -------
    stats : dict
        Counts of ``good``, ``bad_crc``, ``bad_length``, ``too_large``, ``runt``,
        ``bad_escape``, ``truncated`` frames and ``skipped`` bytes (discarded while hunting).
    """

    def __init__(self, *, response=False, max_payload=MAX_PAYLOAD, report_errors=False):
        self.response = response
        self.max_payload = max_payload
        self.report_errors = report_errors
        self._header_bytes = RESPONSE_HEADER_BYTES if response else REQUEST_HEADER_BYTES
        self._limit = self._header_bytes + 0xFFFF + CRC_BYTES
        self.stats = dict.fromkeys(
            ("good", "bad_crc", "bad_length", "too_large", "runt", "bad_escape", "truncated",
             "skipped"), 0)
        self._hunt()

    def _hunt(self):
        self._hunting = True
        self._body = bytearray()
        self._escape = False
        self._overlong = False

    def _start(self):
        self._hunting = False
        self._body = bytearray()
        self._escape = False
        self._overlong = False

    def timeout(self):
        """The line went silent: drop a partial frame and hunt for the next FEND."""
        if not self._hunting and (self._body or self._escape or self._overlong):
            self.stats["truncated"] += 1
        self._hunt()

    def feed(self, data):
        """Consume ``data``; return the list of frames it completed."""
        data = bytes(data)
        frames = []
        i, n = 0, len(data)
        while i < n:
            end = data.find(_FEND, i)
            end = n if end < 0 else end
            if self._hunting:
                self.stats["skipped"] += end - i
            elif end > i and not self._escape and _FESC not in data[i:end]:
                self._extend(data[i:end])          # the common case: no escapes, no FEND
            else:
                frames += self._feed_bytes(data[i:end])
            if end < n:
                frames += self._feed_bytes(data[end:end + 1])
            i = end + 1
        return frames

    def _extend(self, chunk):
        room = self._limit - len(self._body)
        self._body += chunk[:room]
        if len(chunk) > room:
            self._overlong = True

    def _feed_bytes(self, data):
        """The byte-by-byte state machine (escapes and FENDs)."""
        frames = []
        for b in data:
            if self._hunting:
                if b == FEND:
                    self._start()
                else:
                    self.stats["skipped"] += 1
            elif b == FEND:
                if self._escape:
                    self.stats["bad_escape"] += 1
                else:
                    frame = self._finish()
                    if frame is not None:
                        frames.append(frame)
                self._start()
            elif self._escape:
                if b in (TFEND, TFESC):
                    self._escape = False
                    self._append(FEND if b == TFEND else FESC)
                else:
                    self.stats["bad_escape"] += 1
                    self._hunt()
            elif b == FESC:
                self._escape = True
            else:
                self._append(b)
        return frames

    def _append(self, b):
        if len(self._body) < self._limit:
            self._body.append(b)
        else:
            self._overlong = True

    def _finish(self):
        body, n = bytes(self._body), self._header_bytes
        if not body:
            return None
        if len(body) < n + CRC_BYTES:
            self.stats["runt"] += 1
            return None
        fields = body[:n - 2]
        length = int.from_bytes(body[n - 2:n], "little")
        status = None
        if self._overlong:
            status = Status.BAD_LENGTH
        elif crc16(body[:-CRC_BYTES]) != int.from_bytes(body[-CRC_BYTES:], "little"):
            status = Status.BAD_CRC
        elif len(body) - n - CRC_BYTES != length:
            status = Status.BAD_LENGTH
        elif length > self.max_payload:
            status = Status.TOO_LARGE
        if self.response:
            head = dict(status=_as(Status, fields[0]), cmd=_as(Cmd, fields[1]), seq=fields[2])
        else:
            head = dict(status=None, cmd=_as(Cmd, fields[0]), seq=fields[1])
        if status is not None:
            self.stats[{Status.BAD_CRC: "bad_crc", Status.BAD_LENGTH: "bad_length",
                        Status.TOO_LARGE: "too_large"}[status]] += 1
            if self.report_errors:
                return Frame(**{**head, "status": status})
            return None
        self.stats["good"] += 1
        return Frame(payload=body[n:-CRC_BYTES], **head)


def decode_frame(encoded, *, response=False):
    """Decode exactly one good frame from ``encoded`` (raise ValueError otherwise)."""
    frames = FrameDecoder(response=response).feed(encoded)
    if len(frames) != 1:
        raise ValueError(f"expected one good frame, decoded {len(frames)}")
    return frames[0]


# --- command payloads ---------------------------------------------------------------------------

#: IDENTIFY's ``magic``: the bytes ``ZipM``.
MAGIC = int.from_bytes(b"ZipM", "little")

#: Bumped whenever a layout or a command's meaning changes.
PROTOCOL_VERSION = 2

#: Bytes per model word (int32) and per level table entry (int16) in payloads.
MODEL_WORD_BYTES = contract.MODEL_BITS // 8
LEVEL_ENTRY_BYTES = 2


class DeviceState(enum.Enum, shape=8):
    """The device's state, as READ_STATUS reports it (see the module docstring)."""
    UNCONFIGURED = 0
    IDLE = 1
    STREAMING = 2
    BUSY = 3


class ConfigureRequest(data.Struct):
    """CONFIGURE's payload: a :class:`zipml.sim.golden.TrainConfig`.

    Members
    -------
    n_features, batch : unsigned(16)
    rows_per_epoch : unsigned(32)
    lr : unsigned(24)
        ``contract.LR_FRAC`` fractional bits.
    encoding, bits, levels, loss : unsigned(8)
        :class:`~zipml.contract.Encoding`, b, :class:`~zipml.contract.LevelMode`,
        :class:`~zipml.contract.Loss`.
    delay : unsigned(8)
    lr_decay_epochs : unsigned(16)
    """
    n_features: 16
    batch: 16
    rows_per_epoch: 32
    lr: contract.LR_BITS
    encoding: 8
    bits: 8
    levels: 8
    loss: 8
    delay: 8
    lr_decay_epochs: 16


class IdentifyReply(data.Struct):
    """IDENTIFY's reply: what this device (this build) can do.

    Members
    -------
    magic : unsigned(32)
        :data:`MAGIC`.
    version : unsigned(8)
        :data:`PROTOCOL_VERSION`.
    encodings, level_modes, losses : unsigned(8)
        Bitmaps of the supported :class:`~zipml.contract.Encoding`,
        :class:`~zipml.contract.LevelMode` (bit TABLE: level tables) and
        :class:`~zipml.contract.Loss` values (bit ``1 << value``).
    max_bits : unsigned(8)
        Largest b.
    width : unsigned(16)
        W, bits per stream word.
    lanes : unsigned(16)
        Fields the device processes per cycle; W on a full build. A word with more fields is
        taken in parts (:func:`~zipml.contract.pipeline_lanes`), a format it cannot take is
        refused (:func:`~zipml.contract.format_fits`).
    n_max, batch_max : unsigned(16)
    max_payload : unsigned(16)
        The largest request payload the device accepts (at most :data:`MAX_PAYLOAD`).
    memory_words : unsigned(32)
        Resident memory for STORE_DATA, in W-bit words (0: none).
    clock_hz, baud : unsigned(32)
        Core clock; UART baud rate (0 for other links).
    build_id : unsigned(32)
        Identifies the bitstream (e.g. a commit hash prefix).
    """
    magic: 32
    version: 8
    encodings: 8
    level_modes: 8
    losses: 8
    max_bits: 8
    width: 16
    lanes: 16
    n_max: 16
    batch_max: 16
    max_payload: 16
    memory_words: 32
    clock_hz: 32
    baud: 32
    build_id: 32


class ModelOffset(data.Struct):
    """LOAD_MODEL's header; int32 model words follow."""
    offset: 16


class ReadModelRequest(data.Struct):
    """READ_MODEL's request: ``count`` model words from ``offset``."""
    offset: 16
    count: 16


class TrainStreamReply(data.Struct):
    """TRAIN_STREAM's reply: rows and epochs completed since CONFIGURE."""
    rows: 32
    epochs: 32


class StoreDataHeader(data.Struct):
    """STORE_DATA's header (a word offset into resident memory); W-bit words follow."""
    offset: 32


class StoreDataReply(data.Struct):
    """STORE_DATA's reply: the words the resident memory now holds."""
    stored_words: 32


class RunEpochsRequest(data.Struct):
    """RUN_EPOCHS's request."""
    epochs: 32


class StatusReply(data.Struct):
    """READ_STATUS's reply.

    Members
    -------
    state : DeviceState
    last_error : Status
        The last refusal's status (OK if none since RESET).
    last_error_cmd : unsigned(8)
        The command it refused.
    flags : unsigned(8)
        Bit 0: a level table is loaded.
    rows, epochs, saturated_rows : unsigned(32)
        The counters since CONFIGURE.
    stored_words : unsigned(32)
        Words in resident memory.
    epochs_left : unsigned(32)
        Epochs of the current RUN_EPOCHS still to run.
    cycles : unsigned(64)
        Core clock cycles spent training since CONFIGURE.
    """
    state: DeviceState
    last_error: Status
    last_error_cmd: 8
    flags: 8
    rows: 32
    epochs: 32
    saturated_rows: 32
    stored_words: 32
    epochs_left: 32
    cycles: 64


#: Fixed-size request layouts (the whole payload, or the header before the words).
REQUEST_LAYOUTS = {
    Cmd.CONFIGURE: ConfigureRequest, Cmd.LOAD_MODEL: ModelOffset,
    Cmd.READ_MODEL: ReadModelRequest, Cmd.STORE_DATA: StoreDataHeader,
    Cmd.RUN_EPOCHS: RunEpochsRequest,
}

#: Fixed-size OK reply layouts.
REPLY_LAYOUTS = {
    Cmd.IDENTIFY: IdentifyReply, Cmd.TRAIN_STREAM: TrainStreamReply,
    Cmd.STORE_DATA: StoreDataReply, Cmd.READ_STATUS: StatusReply,
}


def struct_bytes(layout):
    """Bytes a layout occupies on the wire (layouts are whole bytes)."""
    size = data.Layout.cast(layout).size
    assert size % 8 == 0, f"{layout!r} is not a whole number of bytes"
    return size // 8


def _fields(layout):
    return list(data.Layout.cast(layout))


def pack_struct(layout, **fields):
    """The bytes of ``layout`` with ``fields`` (every field, by name), little endian.

    Enum fields take members or ints. Raises ValueError for a missing, unknown or out-of-range
    field.
    """
    value = 0
    names = set()
    for name, field in _fields(layout):
        names.add(name)
        if name not in fields:
            raise ValueError(f"{layout.__name__}: missing field {name!r}")
        v = _int(fields[name])
        lo, hi = (-(1 << (field.width - 1)), (1 << (field.width - 1)) - 1) \
            if _signed(field.shape) else (0, (1 << field.width) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"{layout.__name__}.{name} = {v} does not fit {field.width} bits")
        value |= (v & ((1 << field.width) - 1)) << field.offset
    unknown = set(fields) - names
    if unknown:
        raise ValueError(f"{layout.__name__}: unknown fields {sorted(unknown)}")
    return value.to_bytes(struct_bytes(layout), "little")


def identify_reply(*, encodings, level_modes, losses, **fields):
    """IDENTIFY's reply: :class:`IdentifyReply`'s bytes for a device with these capabilities
    (the supported members as iterables, the other fields by name)."""
    return pack_struct(IdentifyReply, magic=MAGIC, version=PROTOCOL_VERSION,
                       encodings=to_bitmap(encodings), level_modes=to_bitmap(level_modes),
                       losses=to_bitmap(losses), **fields)


def unpack_struct(layout, raw):
    """The fields of ``layout`` from ``raw`` (exactly its size) as a dict.

    Fields with an :class:`amaranth.lib.enum.Enum` shape come back as members when the value is
    known, as ints otherwise.
    """
    raw = bytes(raw)
    if len(raw) != struct_bytes(layout):
        raise ValueError(f"{layout.__name__} is {struct_bytes(layout)} bytes, got {len(raw)}")
    value = int.from_bytes(raw, "little")
    out = {}
    for name, field in _fields(layout):
        v = (value >> field.offset) & ((1 << field.width) - 1)
        if _signed(field.shape) and v >> (field.width - 1):
            v -= 1 << field.width
        if isinstance(field.shape, type) and issubclass(field.shape, enum.Enum):
            v = _as(field.shape, v)
        out[name] = v
    return out


def _signed(shape):
    from amaranth.hdl import Shape
    return Shape.cast(shape).signed


def word_bytes(width):
    """Bytes of one W-bit stream word in a payload."""
    return width // 8


def to_bitmap(members):
    """A bitmap with bit ``int(m)`` set for each member."""
    bits = 0
    for m in members:
        bits |= 1 << _int(m)
    return bits


def from_bitmap(enum_cls, bits):
    """The members of ``enum_cls`` whose bits are set."""
    return [m for m in enum_cls if bits >> _int(m) & 1]
