"""The virtual board: the device's gateware in Verilator behind ``socket://``, driven by the
host's :class:`~zipml.host.client.DeviceClient` exactly like a board, trained bit-exact against
the golden device. The first run of a configuration builds the simulator (cached in
``build/virtual_board``)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zipml.contract import Encoding, Format, LevelMode, Loss
from zipml.host.client import DeviceClient
from zipml.host.pack import pack_rows
from zipml.host.transport import SerialTransport
from zipml.sim.golden import GoldenDevice, TrainConfig
from zipml.sim.runner import simulator_available
from zipml.sim.virtual_board import start_virtual_board, stop

PARAMS = dict(width=32, n_max=16, memory_words=512, max_payload=256, batch_max=8)

pytestmark = pytest.mark.skipif(not simulator_available("verilator"),
                                reason="verilator not installed")


def rows(n_rows, n, fmt, seed):
    rng = np.random.default_rng(seed)
    fields = rng.integers(0, 1 << fmt.field_bits, (n_rows, n), dtype=np.uint32)
    if fmt.encoding == Encoding.RAW:
        fields = rng.integers(-(1 << 30), 1 << 30, (n_rows, n)).astype(np.int32).view(np.uint32)
    labels = rng.integers(-(1 << 24), 1 << 24, n_rows).astype(np.int32)
    return pack_rows(fields, labels, PARAMS["width"], fmt)


@pytest.fixture(scope="module")
def board():
    proc, port = start_virtual_board(**PARAMS)
    yield proc, port
    assert stop(proc) == 0


#: The iCEBreaker's device: the lane-serial trainer, resident data in SPRAM.
SERIAL_PARAMS = dict(PARAMS, serial=True, spram=True, memory_words=16384)


@pytest.fixture(scope="module")
def serial_board():
    proc, port = start_virtual_board(**SERIAL_PARAMS)
    yield proc, port
    assert stop(proc) == 0


def test_client_trains_bit_exact(board):
    train_bit_exact(board[1], PARAMS["memory_words"])


def test_lane_serial_board_trains_bit_exact(serial_board):
    """The lane-serial trainer with SPRAM (as the iCE40 build) gives the same words."""
    train_bit_exact(serial_board[1], SERIAL_PARAMS["memory_words"])


def train_bit_exact(port, memory_words):
    with DeviceClient(SerialTransport(f"socket://127.0.0.1:{port}"), timeout=5) as client:
        assert (client.width, client.n_max, client.memory_words) == (32, 16, memory_words)
        assert client.info["baud"] == 0
        for i, (fmt, loss, batch, delay) in enumerate([
                (Format(Encoding.PAIR, 4), Loss.SQUARED, 1, 0),
                (Format(Encoding.SINGLE, 3, LevelMode.UNIFORM_UNSIGNED), Loss.HINGE, 4, 1),
                (Format(Encoding.RAW, 1), Loss.LOGISTIC, 2, 0)]):
            cfg = TrainConfig(n_features=7 + i, rows_per_epoch=40, fmt=fmt, loss=loss,
                              lr=1 << 19, lr_decay_epochs=2, batch=batch, delay=delay)
            words = rows(40, cfg.n_features, fmt, i)
            golden = GoldenDevice(width=32, n_max=16, batch_max=8)
            golden.configure(cfg)
            client.configure(cfg)
            got = client.process(np.concatenate([words] * 2))
            want = golden.process(np.concatenate([words] * 2))
            got += client.run_epochs(words, 2)
            want += golden.run_epochs(words, 2)
            assert len(got) == len(want) == 4
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
            assert client.counters.rows == golden.counters.rows


def test_reconnect_and_throughput(board):
    """A second client gets the same board; streaming rate is reported."""
    _, port = board
    with DeviceClient(SerialTransport(f"socket://127.0.0.1:{port}"), timeout=5) as client:
        fmt = Format(Encoding.PAIR, 2)
        cfg = TrainConfig(n_features=15, rows_per_epoch=200, fmt=fmt, lr=1 << 18)
        words = rows(200, 15, fmt, 9)
        client.configure(cfg)
        start = time.monotonic()
        client.process(words)
        rate = 200 / (time.monotonic() - start)
        print(f"virtual board: {rate:.0f} rows/s ({rate * words.nbytes / 200:.0f} B/s) "
              f"over socket://")
        assert rate > 10


def test_stop_closes_the_port():
    proc, port = start_virtual_board(**PARAMS)
    assert stop(proc) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _running(pid):
    """Whether process ``pid`` exists and has not ended (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_board_stops_when_its_launcher_is_killed():
    # a launcher killed before it can stop its board (SIGKILL: no cleanup runs) leaves no
    # simulator serving a port behind
    code = ("import json, sys, time\n"
            "from zipml.sim.virtual_board import start_virtual_board\n"
            "proc, port = start_virtual_board(**json.loads(sys.argv[1]))\n"
            "print(proc.pid, port, flush=True)\n"
            "time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", code, json.dumps(PARAMS)],
                                stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, launcher.stdout.readline().split())
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(pid):
        os.killpg(pid, signal.SIGKILL)
        pytest.fail("the board kept running after its launcher was killed")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
