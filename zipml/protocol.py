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
- A retried command reaches the device twice if only the response was lost; commands that are
  not idempotent (TRAIN_STREAM, STORE_DATA, RUN_EPOCHS) should be recognised by the device as
  a repeat of the last ``seq`` and answered again without being executed again.

Every frame is checked by the CRC, so a frame that survives has passed CRC-16 with Hamming
distance 4 as long as its body stays within 32,751 bits: hence :data:`MAX_PAYLOAD`.
"""

from dataclasses import dataclass

from amaranth.lib import data, enum
from amaranth.lib.crc import catalog

__all__ = [
    "FEND", "FESC", "TFEND", "TFESC", "CRC", "CRC_BYTES", "REQUEST_HEADER_BYTES",
    "RESPONSE_HEADER_BYTES", "MAX_PAYLOAD", "RX_TIMEOUT", "Cmd", "Status", "Header",
    "crc16", "stuff", "encode_frame", "encode_response", "Frame", "FrameDecoder",
    "decode_frame",
]

#: Frame delimiter, escape byte, and the transposed bytes that follow an escape.
FEND, FESC, TFEND, TFESC = 0xC0, 0xDB, 0xDC, 0xDD

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


def crc16(body):
    """The frame CRC of ``body`` (an iterable of bytes), as an integer."""
    return CRC.compute(bytes(body))


def stuff(body):
    """Escape FEND and FESC in ``body`` (no delimiters added)."""
    out = bytearray()
    for b in body:
        if b == FEND:
            out += bytes((FESC, TFEND))
        elif b == FESC:
            out += bytes((FESC, TFESC))
        else:
            out.append(b)
    return bytes(out)


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
        frames = []
        for b in bytes(data):
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
