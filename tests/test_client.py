"""The protocol client over every transport: identical model words, retries, timeouts."""

import os
import socket
import threading
import time

import numpy as np
import pytest

from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.cli import main
from zipml.host.client import (
    BadArgumentError,
    BadStateError,
    DeviceClient,
    DeviceTimeout,
    LinkError,
)
from zipml.host.datasets import load_dataset
from zipml.host.devices import open_device, open_transport
from zipml.host.pack import pack_rows
from zipml.host.train import prepare, train
from zipml.host.transport import (
    FaultyTransport,
    InProcessTransport,
    SerialTransport,
    Transport,
    XdmaTransport,
    xdma_paths,
)
from zipml.protocol import Cmd
from zipml.sim.golden import DeviceError, GoldenDevice, TrainConfig
from zipml.sim.protocol_device import ProtocolDevice

W, N_MAX = 64, 64


@pytest.fixture(scope="module")
def problem():
    data = load_dataset("diabetes")
    return prepare(data.X, data.y)


def golden():
    return GoldenDevice(width=W, n_max=N_MAX)


def protocol_device(**kw):
    return ProtocolDevice(golden(), **kw)


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def same_run(a, b):
    np.testing.assert_array_equal(a.words, b.words)
    assert len(a.snapshots) == len(b.snapshots)
    for x, y in zip(a.snapshots, b.snapshots):
        np.testing.assert_array_equal(x, y)
    assert a.stats["rows"] == b.stats["rows"] and a.stats["epochs"] == b.stats["epochs"]
    assert a.stats["saturated_rows"] == b.stats["saturated_rows"]


RUNS = {
    "pair4": dict(fmt=Format(Encoding.PAIR, 4)),
    "compact3-batch-delay": dict(fmt=Format(Encoding.COMPACT, 3), batch=5, delay=1),
    "table3": dict(fmt=Format(Encoding.PAIR, 3, LevelMode.TABLE),
                   table=(-250, -120, -40, -5, 5, 40, 120, 250)),
    "raw-decay": dict(fmt=Format(Encoding.RAW), rounding="nearest", lr_decay_epochs=1),
}


@pytest.fixture(scope="module")
def references(problem):
    return {name: train(golden(), problem, epochs=3, **kw) for name, kw in RUNS.items()}


@pytest.fixture
def fifos(tmp_path):
    base = str(tmp_path / "xdma0")
    for path in xdma_paths(base):
        os.mkfifo(path)
    return base


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("link", ["inproc", "socket", "xdma"])
def test_train_over_every_transport_gives_golden_words(problem, references, fifos, run, link):
    dev = protocol_device()
    server = None
    if link == "inproc":
        transport = InProcessTransport(dev)
    elif link == "socket":
        server = dev.serve_tcp()
        transport = SerialTransport(server.url)
    else:
        server = dev.serve_fifos(*xdma_paths(fifos))
        transport = XdmaTransport(fifos)
    try:
        with DeviceClient(transport, timeout=2.0) as client:
            assert (client.width, client.n_max) == (W, N_MAX)
            result = train(client, problem, epochs=3, **RUNS[run])
            assert client.stats["retries"] == 0 and client.stats["stale"] == 0
    finally:
        if server:
            server.stop()
    same_run(result, references[run])
    assert dev.stats["retries"] == 0 and dev.stats["refused"] == 0


def test_warm_start_and_resident_epochs(problem):
    cfg = TrainConfig(n_features=problem.n_features, rows_per_epoch=len(problem.y),
                      fmt=Format(Encoding.PAIR, 2), loss=Loss.LOGISTIC, batch=4)
    rng = np.random.default_rng(5)
    words = pack_rows(rng.integers(0, 1 << 4, (len(problem.y), problem.n_features)),
                      rng.integers(-(1 << 24), 1 << 24, len(problem.y)).astype(np.int32),
                      W, cfg.fmt)
    w0 = rng.integers(-(1 << 24), 1 << 24, problem.n_features)
    ref = golden()
    ref.configure(cfg)
    ref.load_model(w0)
    expected = ref.run_epochs(words, 3)
    dev = protocol_device(memory_words=len(words), epochs_per_poll=1)
    # Small frames: the model and the data span several frames each.
    client = DeviceClient(InProcessTransport(dev), timeout=0.5, max_payload=40)
    client.configure(cfg)
    client.load_model(w0)
    np.testing.assert_array_equal(client.read_model(), w0)
    snaps = client.run_epochs(words, 3)
    assert len(snaps) == 3
    for a, b in zip(snaps, expected):
        np.testing.assert_array_equal(a, b)
    assert client.stats["polls"] >= 3               # the device was busy and was polled
    assert vars(client.counters) == vars(ref.counters)
    with pytest.raises(DeviceError, match="rows, the epoch"):
        client.run_epochs(words[:-2], 1)
    with pytest.raises(DeviceError, match="memory"):
        _configured(protocol_device(memory_words=8), cfg).run_epochs(words, 1)


def test_snapshots_at_every_epoch_end_whatever_the_calls():
    fmt = Format(Encoding.PAIR, 2)
    cfg = TrainConfig(n_features=11, rows_per_epoch=10, fmt=fmt, batch=3)
    rng = np.random.default_rng(2)
    words = pack_rows(rng.integers(0, 16, (25, 11)),
                      rng.integers(-(1 << 24), 1 << 24, 25).astype(np.int32), W, fmt)
    ref = golden()
    ref.configure(cfg)
    client = _configured(protocol_device(), cfg, max_payload=48)     # 6 words a frame
    for a, b in [(0, 7), (7, 37), (37, 50)]:                           # rows span the calls
        expected, got = ref.process(words[a:b]), client.process(words[a:b])
        assert len(got) == len(expected)
        for x, y in zip(got, expected):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(client.read_model(), ref.read_model())
    assert vars(client.counters) == vars(ref.counters)


def _configured(dev, cfg, **kw):
    client = DeviceClient(InProcessTransport(dev), **kw)
    client.configure(cfg)
    return client


def test_capabilities_are_checked_before_sending(problem):
    dev = protocol_device(encodings=[Encoding.PAIR, Encoding.COMPACT], losses=[Loss.SQUARED],
                          level_modes=[LevelMode.UNIFORM_SIGNED], max_bits=4)
    client = DeviceClient(InProcessTransport(dev))
    sent = client.stats["frames_sent"]
    n = problem.n_features
    for cfg, message in [
        (TrainConfig(n, 10, fmt=Format(Encoding.RAW)), "encodings PAIR, COMPACT, not RAW"),
        (TrainConfig(n, 10, loss=Loss.HINGE), "losses SQUARED, not HINGE"),
        (TrainConfig(n, 10, fmt=Format(Encoding.PAIR, 5)), "up to 4 bits"),
        (TrainConfig(n, 10, fmt=Format(Encoding.PAIR, 2, LevelMode.TABLE)),
         "level modes UNIFORM_SIGNED, not TABLE"),
        (TrainConfig(N_MAX + 1, 10), "outside 1..64"),
        (TrainConfig(n, 10, batch=1000), "batch=1000"),
    ]:
        with pytest.raises(DeviceError, match=message):
            client.configure(cfg)
    assert client.stats["frames_sent"] == sent
    assert dev.stats["executed"] == 1                 # IDENTIFY only


def test_formats_beyond_the_lanes_are_refused(problem):
    """A W = 32 build with fewer lanes than W (its last word is the label: no parts): the
    client names the b that fit before sending; the device itself refuses with BAD_CONFIG."""
    from zipml.host.client import BadConfigError
    from zipml.protocol import ConfigureRequest, pack_struct
    dev = ProtocolDevice(GoldenDevice(width=32, n_max=N_MAX), lanes=16)
    client = DeviceClient(InProcessTransport(dev))
    assert client.info["lanes"] == 16
    n = problem.n_features
    with pytest.raises(DeviceError, match="32 fields.*SINGLE needs b in 2..8"):
        client.configure(TrainConfig(n, 10, fmt=Format(Encoding.SINGLE, 1)))
    client.configure(TrainConfig(n, 10, fmt=Format(Encoding.PAIR, 1)))
    raw = pack_struct(ConfigureRequest, n_features=n, batch=1, rows_per_epoch=10, lr=1,
                      encoding=Encoding.SINGLE, bits=1, levels=LevelMode.UNIFORM_SIGNED,
                      loss=Loss.SQUARED, delay=0, lr_decay_epochs=0)
    with pytest.raises(BadConfigError):
        client.request(Cmd.CONFIGURE, raw)
    assert "more than this device's 16 lanes" in dev.last_reason


def test_formats_beyond_the_lanes_train_in_parts(problem):
    """W = 64 with 16 lanes takes every format (a word of more fields in parts) and trains to
    the golden model's words."""
    for fmt in (Format(Encoding.SINGLE, 2), Format(Encoding.PAIR, 1), Format(Encoding.SINGLE, 3)):
        client = DeviceClient(InProcessTransport(protocol_device(lanes=16)))
        same_run(train(client, problem, epochs=2, fmt=fmt), train(golden(), problem, epochs=2,
                                                                 fmt=fmt))


def test_info_lists_the_formats_a_device_takes():
    from zipml.host.cli import supported_formats
    info = DeviceClient(InProcessTransport(protocol_device(lanes=16))).info
    assert supported_formats(info) == "single b=1..8, pair b=1..8, compact b=1..8, raw"
    narrow = ProtocolDevice(GoldenDevice(width=32, n_max=N_MAX), lanes=16)
    info = DeviceClient(InProcessTransport(narrow)).info
    assert supported_formats(info) == "single b=2..8, pair b=1..8, compact b=1..8, raw"


def test_refusals_map_to_errors_naming_the_status():
    client = DeviceClient(InProcessTransport(protocol_device()))
    with pytest.raises(BadStateError, match="READ_MODEL seq 1: BAD_STATE") as info:
        client.request(Cmd.READ_MODEL, b"\0\0\1\0")
    assert info.value.cmd == Cmd.READ_MODEL
    with pytest.raises(BadArgumentError, match="LOAD_LEVELS.*BAD_ARGUMENT"):
        client.load_levels([3, 2, 1, 0])
    with pytest.raises(DeviceError, match="not configured"):
        client.read_model()
    client.reset()
    assert client.status()["last_error"].name == "OK"


@pytest.mark.parametrize("link", ["inproc", "socket"])
def test_training_survives_a_noisy_link(problem, references, link):
    dev = protocol_device()
    server = dev.serve_tcp() if link == "socket" else None
    inner = SerialTransport(server.url) if server else InProcessTransport(dev)
    noisy = FaultyTransport(inner, 2e-4, rx_rate=3e-3, seed=3)
    try:
        with DeviceClient(noisy, timeout=0.05, retries=10, max_payload=512) as client:
            result = train(client, problem, epochs=3, **RUNS["pair4"])
    finally:
        if server:
            server.stop()
    same_run(result, references["pair4"])
    faults = noisy.faults
    assert sum(v for k, v in faults.items() if k.startswith("tx")) > 0
    assert sum(v for k, v in faults.items() if k.startswith("rx")) > 0
    assert client.stats["retries"] > 0
    # The device rejected corrupted requests, and answered repeats from its cache (the
    # in-process run is deterministic; over TCP, read sizes change the random draws).
    assert dev.stats["rejected"] > 0
    if link == "inproc":
        assert dev.stats["retries"] > 0 and client.stats["timeouts"] > 0


def test_dead_device_times_out_and_leaves_nothing_open():
    threads, fds = threading.active_count(), fd_count()
    # A listening socket nobody accepts on: the connection opens, nothing ever answers.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
        timeout, retries = 0.2, 2
        start = time.monotonic()
        with pytest.raises(DeviceTimeout, match="response to IDENTIFY seq 0"):
            DeviceClient(SerialTransport(url), timeout=timeout, retries=retries)
        elapsed = time.monotonic() - start
    assert timeout * (retries + 1) <= elapsed < timeout * (retries + 1) + 1
    assert threading.active_count() == threads and fd_count() == fds


class _Cut(Transport):
    """The link goes dead after ``writes`` writes."""

    def __init__(self, inner, writes):
        self.inner, self.writes = inner, writes

    def write(self, data):
        self.writes -= 1
        if self.writes >= 0:
            self.inner.write(data)

    def read(self, max_bytes, timeout):
        return self.inner.read(max_bytes, timeout)

    def close(self):
        self.inner.close()


def test_link_dying_mid_training_times_out_naming_the_command(problem):
    threads, fds = threading.active_count(), fd_count()
    server = protocol_device().serve_tcp()
    timeout, retries = 0.1, 3
    client = DeviceClient(_Cut(SerialTransport(server.url), 6), timeout=timeout,
                          retries=retries)
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"response to TRAIN_STREAM seq \d+"):
        train(client, problem, epochs=3, **RUNS["pair4"])
    assert time.monotonic() - start < timeout * (retries + 1) + 1
    assert client.stats["timeouts"] == retries + 1
    client.close()
    server.stop()
    assert threading.active_count() == threads and fd_count() == fds
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_busy_device_times_out_naming_the_stage(problem):
    class Stuck(ProtocolDevice):
        def _advance(self):
            pass

    rng = np.random.default_rng(0)
    fmt = Format(Encoding.PAIR, 2)
    words = pack_rows(rng.integers(0, 16, (4, 3)), np.zeros(4, np.int32), W, fmt)
    client = DeviceClient(InProcessTransport(Stuck(golden(), epochs_per_poll=1)),
                          busy_timeout=0.2)
    client.configure(TrainConfig(3, 4, fmt=fmt))
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match="RUN_EPOCHS to finish epoch 1 of 2: still BUSY"):
        client.run_epochs(words, 2)
    assert time.monotonic() - start < 1.5


def test_xdma_open_times_out_without_a_device(fifos):
    start = time.monotonic()
    with pytest.raises(DeviceTimeout, match="opening .*xdma0_h2c_0"):
        XdmaTransport(fifos, open_timeout=0.2)
    assert time.monotonic() - start < 1.5
    with pytest.raises(LinkError, match="cannot open"):
        XdmaTransport(fifos + "-missing")


def test_serial_loopback_transport():
    with SerialTransport("loop://", 3_000_000) as t:
        t.write(b"hello")
        assert t.read(3, 0.5) == b"hel"
        assert t.read(100, 0.5) == b"lo"
        assert t.read(100, 0.05) == b""


def test_device_strings(fifos):
    assert isinstance(open_device("golden", width=W), GoldenDevice)
    for spec in ("inproc", "loop"):
        client = open_device(spec, width=32, n_max=8)
        assert (client.width, client.n_max) == (32, 8)
        client.close()
    server = protocol_device().serve_tcp()
    with open_device(server.url, timeout=1.0) as client:
        assert client.width == W
    server.stop()
    server = protocol_device().serve_fifos(*xdma_paths(fifos))
    with open_device(f"xdma://{fifos}", timeout=1.0) as client:
        assert client.n_max == N_MAX
    server.stop()
    with pytest.raises(LinkError, match="/dev/nonexistent-tty"):
        open_transport("serial:///dev/nonexistent-tty?baud=3000000")
    with pytest.raises(LinkError, match="/dev/nonexistent-tty"):
        open_transport("/dev/nonexistent-tty")
    with pytest.raises(ValueError, match="baud must be an integer"):
        open_transport("serial:///dev/ttyUSB1?baud=fast")
    with pytest.raises(ValueError, match="unknown device"):
        open_device("carrier-pigeon")


def test_cli_trains_over_the_protocol(tmp_path, capsys):
    out = tmp_path / "run.json"
    args = ["train", "--data", "diabetes", "--bits", "2", "--epochs", "2", "--width", "64"]
    assert main(args + ["--device", "inproc", "--json", str(out)]) == 0
    inproc = out.read_text()
    assert main(args + ["--device", "golden", "--json", str(out)]) == 0
    import json
    a, b = json.loads(inproc), json.loads(out.read_text())
    assert a["model_words"] == b["model_words"] and a["snapshots"] == b["snapshots"]
