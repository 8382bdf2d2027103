"""The frame format in pure Python: round trips, the CRC check value, resynchronisation."""

import random

import pytest

from zipml import protocol
from zipml.protocol import (
    CRC,
    FEND,
    FESC,
    Cmd,
    FrameDecoder,
    Status,
    crc16,
    decode_frame,
    encode_frame,
    encode_response,
)


def test_crc_check_value():
    assert crc16(b"123456789") == 0x906E
    assert CRC.compute(b"123456789") == 0x906E
    # A body followed by its CRC leaves the residue the gateware's match_detected looks for.
    body = bytes(range(40))
    codeword = body + crc16(body).to_bytes(2, "little")
    assert CRC.compute(codeword) == CRC.residue() ^ 0xFFFF


def test_enums_are_bytes():
    assert Cmd.as_shape().width == 8 and Status.as_shape().width == 8
    assert len({c.value for c in Cmd}) == len(Cmd)
    assert Status.OK.value == 0
    assert protocol.Header.as_shape().size == 8 * protocol.RESPONSE_HEADER_BYTES


def test_layout_by_hand():
    frame = encode_frame(Cmd.READ_MODEL, 7, b"\x01\xc0\xdb")
    body = bytes((Cmd.READ_MODEL.value, 7, 3, 0, 0x01, 0xC0, 0xDB))
    crc = crc16(body).to_bytes(2, "little")
    assert frame == bytes((FEND,)) + protocol.stuff(body + crc) + bytes((FEND,))
    assert frame[5:10] == bytes((0x01, FESC, 0xDC, FESC, 0xDD))
    assert FEND not in frame[1:-1]


@pytest.mark.parametrize("length", [0, 1, 2, 255, 256, 1000, protocol.MAX_PAYLOAD])
def test_round_trip(length):
    rng = random.Random(length)
    # Bias towards the special bytes so stuffing is exercised.
    payload = bytes(rng.choice([FEND, FESC, 0xDC, 0xDD, rng.randrange(256)])
                    for _ in range(length))
    for seq in (0, 0xC0, 0xDB, 255):
        frame = decode_frame(encode_frame(Cmd.TRAIN_STREAM, seq, payload))
        assert (frame.cmd, frame.seq, frame.payload, frame.status) == \
            (Cmd.TRAIN_STREAM, seq, payload, None)
        resp = decode_frame(encode_response(Status.BUSY, 0xC0, seq, payload), response=True)
        assert (resp.status, resp.cmd, resp.seq, resp.payload) == (Status.BUSY, 0xC0, seq, payload)


def test_incremental_byte_by_byte():
    stream = b"".join(encode_frame(Cmd.IDENTIFY, i, bytes([i] * i)) for i in range(20))
    dec = FrameDecoder()
    frames = [f for b in stream for f in dec.feed(bytes([b]))]
    assert [(f.seq, f.payload) for f in frames] == [(i, bytes([i] * i)) for i in range(20)]
    assert dec.stats["good"] == 20


def test_unknown_command_is_kept():
    frame = decode_frame(encode_frame(0x77, 1))
    assert frame.cmd == 0x77


def test_resync_after_garbage_dropped_and_truncated():
    rng = random.Random(1)
    good = [encode_frame(Cmd.STORE_DATA, i, rng.randbytes(rng.randrange(50))) for i in range(6)]
    dropped = bytearray(good[1])
    del dropped[len(dropped) // 2]                    # a byte lost in the middle
    truncated = good[2][:len(good[2]) // 2]          # the rest never arrives
    garbage = rng.randbytes(300)
    stream = garbage + good[0] + bytes(dropped) + good[3] + truncated + good[4] + garbage
    stream += good[5]
    dec = FrameDecoder(report_errors=True)
    frames = dec.feed(stream)
    ok = [f.seq for f in frames if f.status is None]
    assert ok == [0, 3, 4, 5]
    # Every good frame came through; the rest was either answered with an error or dropped.
    assert all(f.status in (Status.BAD_CRC, Status.BAD_LENGTH) for f in frames if f.status)
    assert dec.stats["good"] == 4


def test_startup_garbage_is_skipped_silently():
    dec = FrameDecoder(report_errors=True)
    assert dec.feed(bytes(range(0x20, 0x80))) == []
    assert dec.stats["skipped"] == 0x60
    assert [f.seq for f in dec.feed(encode_frame(Cmd.RESET, 9))] == [9]


def test_timeout_drops_partial_frame_and_hunts():
    dec = FrameDecoder(report_errors=True)
    frame = encode_frame(Cmd.LOAD_MODEL, 3, b"abcdef")
    assert dec.feed(frame[:7]) == []
    dec.timeout()
    # The tail of the interrupted frame arrives late: skipped until its closing FEND.
    assert dec.feed(frame[7:]) == []
    assert dec.stats["truncated"] == 1
    assert [f.seq for f in dec.feed(encode_frame(Cmd.LOAD_MODEL, 4, b"x"))] == [4]


def test_corruption_is_reported_not_delivered():
    frame = bytearray(encode_frame(Cmd.CONFIGURE, 42, b"\x10\x20\x30\x40"))
    frame[6] ^= 0x04
    dec = FrameDecoder(report_errors=True)
    (bad,) = dec.feed(frame)
    assert (bad.status, bad.cmd, bad.seq, bad.payload) == (Status.BAD_CRC, Cmd.CONFIGURE, 42, b"")
    assert FrameDecoder().feed(frame) == []


def test_runt_bad_escape_and_length():
    dec = FrameDecoder(report_errors=True)
    assert dec.feed(bytes((FEND, 1, 2, 3, FEND))) == []
    assert dec.stats["runt"] == 1
    assert dec.feed(bytes((FESC, 0x00))) == [] and dec.stats["bad_escape"] == 1
    # A length field that disagrees with the payload, under a correct CRC.
    body = bytes((Cmd.IDENTIFY.value, 5, 9, 0, 1, 2))
    body += crc16(body).to_bytes(2, "little")
    (bad,) = dec.feed(bytes((FEND,)) + protocol.stuff(body) + bytes((FEND,)))
    assert bad.status == Status.BAD_LENGTH


def test_too_large():
    dec = FrameDecoder(max_payload=16, report_errors=True)
    (bad,) = dec.feed(encode_frame(Cmd.STORE_DATA, 1, bytes(17)))
    assert bad.status == Status.TOO_LARGE
    assert dec.feed(encode_frame(Cmd.STORE_DATA, 2, bytes(16)))[0].status is None
