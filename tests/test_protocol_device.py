"""Command payloads and the Python protocol device: every command, every refusal, retries."""

import random
import socket
import threading

import numpy as np
import pytest

from zipml import contract, protocol
from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.pack import pack_rows
from zipml.protocol import (
    Cmd,
    DeviceState,
    Status,
    decode_frame,
    encode_frame,
    pack_struct,
    struct_bytes,
    unpack_struct,
)
from zipml.sim.golden import GoldenDevice, TrainConfig
from zipml.sim.protocol_device import ProtocolDevice

LAYOUTS = sorted({*protocol.REQUEST_LAYOUTS.values(), *protocol.REPLY_LAYOUTS.values()},
                 key=lambda layout: layout.__name__)
W = 64
N = 7
FMT = Format(Encoding.PAIR, 3)


# --- payload layouts ---------------------------------------------------------------------------

def _random_fields(layout, rng):
    fields = {}
    for name, field in protocol.data.Layout.cast(layout):
        if isinstance(field.shape, type) and issubclass(field.shape, protocol.enum.Enum):
            fields[name] = rng.choice(list(field.shape))
        else:
            fields[name] = rng.randrange(1 << field.width)
    return fields


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.__name__)
def test_layout_round_trip(layout):
    rng = random.Random(layout.__name__)
    assert layout.as_shape().size == 8 * struct_bytes(layout)
    for _ in range(50):
        fields = _random_fields(layout, rng)
        raw = pack_struct(layout, **fields)
        assert len(raw) == struct_bytes(layout)
        assert unpack_struct(layout, raw) == fields
    # The gateware's view of the same bits agrees with the Python packing.
    view = layout.as_shape().from_bits(int.from_bytes(raw, "little"))
    for name, value in fields.items():
        got = view[name]
        assert (got if isinstance(value, protocol.enum.Enum) else int(got)) == value


def test_configure_bytes_by_hand():
    raw = pack_struct(protocol.ConfigureRequest, n_features=0x0102, batch=3,
                      rows_per_epoch=0x0A0B0C0D, lr=0x123456, encoding=Encoding.COMPACT,
                      bits=4, levels=LevelMode.TABLE, loss=Loss.HINGE, delay=1,
                      lr_decay_epochs=0x0708)
    assert raw == bytes([0x02, 0x01, 0x03, 0x00, 0x0D, 0x0C, 0x0B, 0x0A, 0x56, 0x34, 0x12,
                         2, 4, 2, 2, 1, 0x08, 0x07])


def test_pack_rejects_bad_fields():
    good = dict(offset=0, count=1)
    with pytest.raises(ValueError, match="missing"):
        pack_struct(protocol.ReadModelRequest, offset=0)
    with pytest.raises(ValueError, match="unknown"):
        pack_struct(protocol.ReadModelRequest, **good, extra=1)
    with pytest.raises(ValueError, match="does not fit"):
        pack_struct(protocol.ReadModelRequest, offset=1 << 16, count=1)
    with pytest.raises(ValueError, match="does not fit"):
        pack_struct(protocol.ReadModelRequest, offset=-1, count=1)
    with pytest.raises(ValueError, match="bytes"):
        unpack_struct(protocol.ReadModelRequest, b"\x00" * 3)


def test_bitmaps():
    assert protocol.to_bitmap([Encoding.PAIR, Encoding.RAW]) == 0b1010
    assert protocol.from_bitmap(Encoding, 0b1010) == [Encoding.PAIR, Encoding.RAW]
    assert protocol.from_bitmap(Loss, protocol.to_bitmap(Loss)) == list(Loss)


# --- the device --------------------------------------------------------------------------------

class Host:
    """Sends requests to a ProtocolDevice and decodes the one response each gives."""

    def __init__(self, dev):
        self.dev = dev
        self.seq = 0

    def raw(self, frame):
        out = self.dev.feed(frame)
        return decode_frame(out, response=True) if out else None

    def __call__(self, cmd, payload=b"", seq=None):
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFF
        resp = self.raw(encode_frame(cmd, seq, payload))
        assert (resp.cmd, resp.seq) == (cmd, seq)
        if resp.status != Status.OK:
            assert resp.payload == b""
        return resp.status, resp.payload

    def ok(self, cmd, payload=b"", layout=None):
        status, reply = self(cmd, payload)
        assert status == Status.OK, (status, self.dev.last_reason)
        return unpack_struct(layout, reply) if layout else reply

    def status(self):
        return self.ok(Cmd.READ_STATUS, layout=protocol.StatusReply)

    def configure(self, **kw):
        return self(Cmd.CONFIGURE, configure_payload(**kw))


def configure_payload(**kw):
    fields = dict(n_features=N, batch=1, rows_per_epoch=10, lr=1 << 18,
                  encoding=FMT.encoding, bits=FMT.bits, levels=FMT.levels, loss=Loss.SQUARED,
                  delay=0, lr_decay_epochs=0)
    fields.update(kw)
    return pack_struct(protocol.ConfigureRequest, **fields)


def config(**kw):
    args = dict(n_features=N, rows_per_epoch=10, fmt=FMT, lr=1 << 18)
    args.update(kw)
    return TrainConfig(**args)


def rows(n_rows, seed=0, fmt=FMT, n=N):
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 1 << fmt.field_bits, (n_rows, n), dtype=np.uint32)
    labels = rng.integers(-(1 << 24), 1 << 24, n_rows).astype(np.int32)
    return pack_rows(fields, labels, W, fmt)


def word_bytes(words):
    return np.ascontiguousarray(words, "<u4").tobytes()


def fingerprint(dev):
    """Everything a refused command must leave as it was."""
    g = dev.golden
    return (dev.state, g.config, g.model.tolist(), g.table, vars(g.counters).copy(),
            dev.stored_words, dev.cycles)


@pytest.fixture
def dev():
    return ProtocolDevice(GoldenDevice(width=W, n_max=16, batch_max=8), memory_words=64,
                          build_id=0xBEEF, clock_hz=48_000_000, baud=3_000_000)


@pytest.fixture
def host(dev):
    return Host(dev)


def test_identify(host):
    info = host.ok(Cmd.IDENTIFY, layout=protocol.IdentifyReply)
    assert info["magic"] == protocol.MAGIC and info["version"] == protocol.PROTOCOL_VERSION
    assert (info["width"], info["n_max"], info["batch_max"], info["memory_words"]) == \
        (W, 16, 8, 64)
    assert (info["build_id"], info["clock_hz"], info["baud"]) == (0xBEEF, 48_000_000, 3_000_000)
    assert protocol.from_bitmap(Encoding, info["encodings"]) == list(Encoding)
    assert protocol.from_bitmap(LevelMode, info["level_modes"]) == list(LevelMode)
    assert info["max_bits"] == contract.MAX_BITS
    assert info["max_payload"] == protocol.MAX_PAYLOAD


def test_power_up_state_and_order(host, dev):
    s = host.status()
    assert s["state"] == DeviceState.UNCONFIGURED and s["last_error"] == Status.OK
    before = fingerprint(dev)
    for cmd, payload in [(Cmd.LOAD_MODEL, b"\0\0"), (Cmd.READ_MODEL, b"\0\0\1\0"),
                         (Cmd.TRAIN_STREAM, b""), (Cmd.RUN_EPOCHS, b"\1\0\0\0")]:
        assert host(cmd, payload)[0] == Status.BAD_STATE
        s = host.status()
        assert (s["last_error"], s["last_error_cmd"]) == (Status.BAD_STATE, cmd.value)
    assert fingerprint(dev) == before
    assert host(0x77)[0] == Status.UNKNOWN_CMD


def test_configure(host, dev):
    table = np.arange(-2, 2, dtype="<i2").tobytes()
    host.ok(Cmd.LOAD_LEVELS, table)
    host.ok(Cmd.STORE_DATA, b"\0\0\0\0" + word_bytes(rows(2)))
    assert host.configure(batch=4, delay=1, lr_decay_epochs=2, loss=Loss.HINGE)[0] == Status.OK
    assert dev.golden.config == config(batch=4, delay=1, lr_decay_epochs=2, loss=Loss.HINGE)
    s = host.status()
    assert s["state"] == DeviceState.IDLE and (s["rows"], s["epochs"]) == (0, 0)
    # The table and the stored data survive CONFIGURE.
    assert dev.golden.table == (-2, -1, 0, 1) and s["stored_words"] == 4 and s["flags"] & 1


@pytest.mark.parametrize("fields, status", [
    (dict(n_features=17), Status.TOO_LARGE),
    (dict(n_features=0), Status.BAD_CONFIG),
    (dict(rows_per_epoch=0), Status.BAD_CONFIG),
    (dict(lr=0), Status.BAD_CONFIG),
    (dict(encoding=4), Status.BAD_CONFIG),
    (dict(levels=3), Status.BAD_CONFIG),
    (dict(loss=3), Status.BAD_CONFIG),
    (dict(bits=0), Status.BAD_CONFIG),
    (dict(bits=9), Status.BAD_CONFIG),
    (dict(batch=0), Status.BAD_CONFIG),
    (dict(batch=9), Status.BAD_CONFIG),
    (dict(delay=2), Status.BAD_CONFIG),
    (dict(levels=LevelMode.TABLE, bits=1), Status.BAD_CONFIG),
])
def test_bad_configure_changes_nothing(host, dev, fields, status):
    host.configure(n_features=5)
    host.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=0)
            + np.arange(1, 6, dtype="<i4").tobytes())
    before = fingerprint(dev)
    assert host.configure(**fields)[0] == status
    assert fingerprint(dev) == before
    assert host.status()["last_error"] == status


def test_configure_refuses_what_the_build_lacks():
    dev = ProtocolDevice(GoldenDevice(width=W, n_max=16), encodings=[Encoding.PAIR],
                         level_modes=[LevelMode.UNIFORM_SIGNED], losses=[Loss.SQUARED],
                         max_bits=4)
    host = Host(dev)
    assert host.configure()[0] == Status.OK
    for fields in (dict(encoding=Encoding.RAW), dict(loss=Loss.LOGISTIC), dict(bits=5),
                   dict(levels=LevelMode.UNIFORM_UNSIGNED)):
        assert host.configure(**fields)[0] == Status.BAD_CONFIG
    assert host(Cmd.LOAD_LEVELS, np.arange(4, dtype="<i2").tobytes())[0] == Status.BAD_CONFIG


def test_wrong_lengths(host, dev):
    assert host(Cmd.IDENTIFY, b"\0")[0] == Status.BAD_LENGTH
    assert host(Cmd.CONFIGURE, configure_payload()[:-1])[0] == Status.BAD_LENGTH
    host.configure()
    before = fingerprint(dev)
    for cmd, payload in [(Cmd.LOAD_MODEL, b"\0"), (Cmd.LOAD_MODEL, b"\0\0\1\2\3"),
                         (Cmd.READ_MODEL, b"\0\0\1"), (Cmd.LOAD_LEVELS, b"\0\0\0"),
                         (Cmd.TRAIN_STREAM, b"\0" * 12), (Cmd.STORE_DATA, b"\0\0\0\0\1"),
                         (Cmd.RUN_EPOCHS, b"\1"), (Cmd.READ_STATUS, b"\0"), (Cmd.RESET, b"\0")]:
        assert host(cmd, payload)[0] == Status.BAD_LENGTH, cmd
    assert fingerprint(dev) == before


def test_load_and_read_model(host, dev):
    host.configure()
    words = np.array([-(1 << 31), -1, 0, 1, 1 << 24, (1 << 31) - 1, 12345], "<i4")
    host.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=0) + words[:3].tobytes())
    host.ok(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=3) + words[3:].tobytes())
    np.testing.assert_array_equal(dev.golden.read_model(), words)
    for offset, count in [(0, N), (2, 3), (6, 1), (0, 0)]:
        raw = host.ok(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=offset,
                                                  count=count))
        np.testing.assert_array_equal(np.frombuffer(raw, "<i4"), words[offset:offset + count])
    before = fingerprint(dev)
    assert host(Cmd.LOAD_MODEL, pack_struct(protocol.ModelOffset, offset=5)
                + words[:3].tobytes())[0] == Status.BAD_ARGUMENT
    assert host(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=5,
                                            count=3))[0] == Status.BAD_ARGUMENT
    assert host(Cmd.READ_MODEL, pack_struct(protocol.ReadModelRequest, offset=0,
                                            count=2000))[0] == Status.TOO_LARGE
    assert fingerprint(dev) == before


def test_load_levels(host, dev):
    table = [-200, -50, 40, 255]
    host.ok(Cmd.LOAD_LEVELS, np.array(table, "<i2").tobytes())
    assert dev.golden.table == tuple(table)
    assert host.status()["flags"] & 1
    before = fingerprint(dev)
    for bad in ([1, 2, 3], [1, 2], [-300, 0, 1, 2], [0, 0, 1, 2], list(range(512))):
        assert host(Cmd.LOAD_LEVELS, np.array(bad, "<i2").tobytes())[0] == Status.BAD_ARGUMENT
    assert fingerprint(dev) == before


def test_train_stream_matches_golden_across_any_frame_boundaries(host, dev):
    cfg = config(rows_per_epoch=10, batch=3, delay=1)
    host.configure(batch=3, delay=1)
    ref = GoldenDevice(width=W, n_max=16, batch_max=8)
    ref.configure(cfg)
    words = rows(25)                                  # two and a half epochs
    ref.process(words)
    raw, cuts = word_bytes(words), [0, 1, 2, 9, 10, 17, 33, 40, len(words)]
    assert contract.row_words(W, FMT, N) == 2
    for a, b in zip(cuts, cuts[1:]):
        reply = host.ok(Cmd.TRAIN_STREAM, raw[a * 8:b * 8], protocol.TrainStreamReply)
        assert reply == dict(rows=b // 2, epochs=b // 20)
    np.testing.assert_array_equal(dev.golden.read_model(), ref.read_model())
    s = host.status()
    assert (s["rows"], s["epochs"], s["state"]) == (25, 2, DeviceState.STREAMING)
    assert s["cycles"] == len(words)
    assert host(Cmd.RUN_EPOCHS, b"\1\0\0\0")[0] == Status.BAD_STATE   # mid-epoch


def test_table_formats_need_the_table(host, dev):
    host.configure(levels=LevelMode.TABLE)
    before = fingerprint(dev)
    assert host(Cmd.TRAIN_STREAM, word_bytes(rows(1)))[0] == Status.BAD_STATE
    host.ok(Cmd.LOAD_LEVELS, np.arange(-2, 2, dtype="<i2").tobytes())      # 4, not 8 entries
    assert host(Cmd.TRAIN_STREAM, word_bytes(rows(1)))[0] == Status.BAD_STATE
    assert fingerprint(dev)[:3] == before[:3]
    host.ok(Cmd.LOAD_LEVELS, np.arange(-4, 4, dtype="<i2").tobytes())
    host.ok(Cmd.TRAIN_STREAM, word_bytes(rows(1)))


def test_store_data_and_run_epochs_while_busy():
    dev = ProtocolDevice(GoldenDevice(width=W, n_max=16), memory_words=30, epochs_per_poll=1)
    host = Host(dev)
    host.configure()
    words = rows(10)
    raw = word_bytes(words)
    assert host.ok(Cmd.STORE_DATA, b"\0\0\0\0" + raw[:56], protocol.StoreDataReply) == \
        dict(stored_words=7)
    before = fingerprint(dev)
    assert host(Cmd.STORE_DATA, b"\x08\0\0\0" + raw[56:])[0] == Status.BAD_ARGUMENT   # hole
    assert host(Cmd.STORE_DATA, b"\x07\0\0\0" + raw * 2)[0] == Status.TOO_LARGE
    assert host(Cmd.RUN_EPOCHS, b"\1\0\0\0")[0] == Status.BAD_STATE    # 7 words, not 20
    assert fingerprint(dev) == before
    assert host.ok(Cmd.STORE_DATA, b"\x07\0\0\0" + raw[56:],
                   protocol.StoreDataReply)["stored_words"] == 20
    assert host(Cmd.RUN_EPOCHS, b"\0\0\0\0")[0] == Status.BAD_ARGUMENT
    host.ok(Cmd.RUN_EPOCHS, b"\3\0\0\0")
    busy = fingerprint(dev)
    assert busy[0] == DeviceState.BUSY
    for cmd, payload in [(Cmd.CONFIGURE, configure_payload()), (Cmd.TRAIN_STREAM, raw),
                         (Cmd.READ_MODEL, b"\0\0\1\0"), (Cmd.STORE_DATA, b"\0\0\0\0"),
                         (Cmd.LOAD_MODEL, b"\0\0"), (Cmd.RUN_EPOCHS, b"\1\0\0\0"),
                         (Cmd.LOAD_LEVELS, np.arange(4, dtype="<i2").tobytes())]:
        assert host(cmd, payload)[0] == Status.BAD_STATE, cmd
    assert fingerprint(dev) == busy
    host.ok(Cmd.IDENTIFY)
    polls = [host.status() for _ in range(3)]
    assert [(s["state"], s["epochs"], s["epochs_left"]) for s in polls] == [
        (DeviceState.BUSY, 1, 2), (DeviceState.BUSY, 2, 1), (DeviceState.IDLE, 3, 0)]
    assert polls[-1]["cycles"] == 60 and polls[-1]["stored_words"] == 20
    ref = GoldenDevice(width=W, n_max=16)
    ref.configure(config())
    ref.run_epochs(words, 3)
    np.testing.assert_array_equal(dev.golden.read_model(), ref.read_model())


def test_reset(host, dev):
    host.configure()
    host.ok(Cmd.LOAD_LEVELS, np.arange(4, dtype="<i2").tobytes())
    host.ok(Cmd.STORE_DATA, b"\0\0\0\0" + word_bytes(rows(2)))
    host.ok(Cmd.TRAIN_STREAM, word_bytes(rows(3)))
    host(Cmd.RUN_EPOCHS, b"\0\0\0\0")
    host.ok(Cmd.RESET)
    s = host.status()
    assert s == dict(state=DeviceState.UNCONFIGURED, last_error=Status.OK, last_error_cmd=0,
                     flags=0, rows=0, epochs=0, saturated_rows=0, stored_words=0,
                     epochs_left=0, cycles=0)
    assert dev.golden.config is None and dev.golden.table is None


def test_a_retried_seq_runs_once(host, dev):
    host.configure()
    frame = encode_frame(Cmd.TRAIN_STREAM, 42, word_bytes(rows(4)))
    first, again = dev.feed(frame), dev.feed(frame)
    assert first == again
    assert dev.golden.counters.rows == 4 and dev.stats["retries"] == 1
    store = encode_frame(Cmd.STORE_DATA, 43, b"\0\0\0\0" + word_bytes(rows(1)))
    dev.feed(store)
    dev.feed(store)
    assert dev.stored_words == 2
    # The same seq with another command is a new request.
    st = decode_frame(dev.feed(encode_frame(Cmd.READ_STATUS, 43)), response=True)
    assert st.status == Status.OK and unpack_struct(protocol.StatusReply, st.payload)["rows"] == 4
    # A refused request is answered again from the cache too.
    bad = encode_frame(Cmd.RUN_EPOCHS, 44, b"\0\0\0\0")
    assert dev.feed(bad) == dev.feed(bad)
    assert dev.stats["retries"] == 3


def test_rejected_frames_are_not_cached():
    dev = ProtocolDevice(GoldenDevice(width=W, n_max=16), max_payload=64)
    host = Host(dev)
    host.configure()
    frame = bytearray(encode_frame(Cmd.TRAIN_STREAM, 9, word_bytes(rows(2))))
    frame[10] ^= 0x01
    resp = host.raw(bytes(frame))
    assert (resp.status, resp.cmd, resp.seq) == (Status.BAD_CRC, Cmd.TRAIN_STREAM, 9)
    assert dev.golden.counters.rows == 0
    assert host(Cmd.TRAIN_STREAM, word_bytes(rows(2)), seq=9) == \
        (Status.OK, pack_struct(protocol.TrainStreamReply, rows=2, epochs=0))
    resp = host.raw(encode_frame(Cmd.TRAIN_STREAM, 10, word_bytes(rows(5))))   # 80 > 64 bytes
    assert (resp.status, resp.seq) == (Status.TOO_LARGE, 10)
    assert dev.stats["rejected"] == 2 and dev.golden.counters.rows == 2


def test_serve_tcp_one_client_at_a_time_and_stops_cleanly():
    threads = threading.active_count()
    dev = ProtocolDevice(GoldenDevice(width=W, n_max=16))
    server = dev.serve_tcp()
    assert server.url == f"socket://127.0.0.1:{server.port}"
    for seq in range(2):
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"\x55garbage" + encode_frame(Cmd.IDENTIFY, seq))
            data = b""
            while data.count(bytes([protocol.FEND])) < 2:
                data += s.recv(4096)
            resp = decode_frame(data, response=True)
            assert (resp.status, resp.seq) == (Status.OK, seq)
    server.stop()
    assert server.connections == 2
    assert threading.active_count() == threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_fast_crc_and_decoder_agree_with_the_definitions():
    rng = random.Random(7)
    for length in (0, 1, 2, 3, 31, 500):
        body = rng.randbytes(length)
        assert protocol.crc16(body) == protocol.CRC.compute(body)
    # Frames full of escapes, fed in random chunks, decode as when fed byte by byte.
    frames = [encode_frame(Cmd.STORE_DATA, i, bytes(rng.choice([0xC0, 0xDB, 0xDC, 7])
                                                    for _ in range(rng.randrange(40))))
              for i in range(30)]
    stream = b"".join(frames[:10]) + b"\xdb\x01junk" + b"".join(frames[10:])
    one = protocol.FrameDecoder()
    expected = [f for b in stream for f in one.feed(bytes([b]))]
    chunked, pos, got = protocol.FrameDecoder(), 0, []
    while pos < len(stream):
        step = rng.randrange(1, 60)
        got += chunked.feed(stream[pos:pos + step])
        pos += step
    assert got == expected and len(got) == 30
    assert chunked.stats == one.stats
