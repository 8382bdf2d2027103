"""The PCIe path against the virtual board: ``xdma://<dir>/xdma0`` opened by
:func:`~zipml.host.devices.open_device` and the estimators, that is by
:class:`~zipml.host.transport.XdmaTransport`, the code that opens ``/dev/xdma0_h2c_0`` and
``/dev/xdma0_c2h_0`` on a PCIe machine, with named pipes at those paths bridged to the device's
gateware in Verilator (:mod:`zipml.sim.fifo_bridge`). Training gives the golden device's model
words bit for bit.

The board has the parameters of ``test_virtual_board.py`` and ``test_fuzz.py``, so the three
share one cached Verilator build (``build/virtual_board``); with it cached this module takes
seconds. The first test checks the bridge itself against the Python protocol device and needs
no simulator.
"""

import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from zipml import ZipMLClassifier, ZipMLRegressor
from zipml.host.cli import main
from zipml.host.datasets import load_dataset
from zipml.host.devices import open_device
from zipml.host.transport import XdmaTransport, xdma_paths
from zipml.sim.fifo_bridge import FifoBridge, start_xdma_virtual_board
from zipml.sim.golden import GoldenDevice
from zipml.sim.protocol_device import ProtocolDevice
from zipml.sim.runner import ROOT, simulator_available

PARAMS = dict(width=32, n_max=16, memory_words=512, max_payload=256, batch_max=8)

needs_verilator = pytest.mark.skipif(not simulator_available("verilator"),
                                     reason="verilator not installed")


def golden():
    return GoldenDevice(width=PARAMS["width"], n_max=PARAMS["n_max"],
                        batch_max=PARAMS["batch_max"])


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def open_fds_to(paths):
    """This process's descriptors open on any of ``paths``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") in paths:
                found.append(fd)
        except OSError:
            pass
    return found


def bridge_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("zipml-fifo-bridge")]


@pytest.fixture(scope="module")
def diabetes():
    data = load_dataset("diabetes")
    return data.X, data.y


def test_bridge_to_the_protocol_device(tmp_path, diabetes):
    """The bridge alone: sessions come and go on the pipes while the device keeps one TCP
    connection; a device that hangs up is reported; stopping leaves nothing behind."""
    X, y = diabetes[0][:60], diabetes[1][:60]
    want = ZipMLRegressor(device=golden(), bits=3, epochs=2).fit(X, y).model_words_
    threads, fds = threading.active_count(), fd_count()
    server = ProtocolDevice(golden()).serve_tcp()
    base = tmp_path / "xdma0"
    paths = xdma_paths(str(base))
    bridge = FifoBridge(base, server.port)
    try:
        assert bridge.url == f"xdma://{base}"
        assert all(stat.S_ISFIFO(os.stat(p).st_mode) for p in paths)
        for _ in range(2):
            got = ZipMLRegressor(device=bridge.url, bits=3, epochs=2).fit(X, y)
            np.testing.assert_array_equal(got.model_words_, want)
        assert server.connections == 1 and bridge.running and bridge.error is None
        server.stop()
        deadline = time.monotonic() + 2
        while bridge.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bridge.error == "the device closed the connection"
    finally:
        bridge.stop()
        server.stop()
    bridge.stop()                                       # idempotent
    assert not any(os.path.exists(p) for p in paths)   # it made them, it removed them
    assert threading.active_count() == threads and fd_count() == fds
    (tmp_path / "file_h2c_0").write_text("")
    with pytest.raises(FileExistsError, match="not a named pipe"):
        FifoBridge(tmp_path / "file", 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        FifoBridge(base, free_port)
    assert not any(os.path.exists(p) for p in paths)
    assert threading.active_count() == threads and fd_count() == fds


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    base = tmp_path_factory.mktemp("pcie") / "xdma0"
    paths = xdma_paths(str(base))
    board = start_xdma_virtual_board(base, **PARAMS)
    yield board
    assert board.stop() == 0
    assert board.bridge.error is None
    assert not bridge_threads() and not open_fds_to(paths)
    assert not any(os.path.exists(p) for p in paths)


@needs_verilator
def test_identify_over_xdma(board, capsys):
    with open_device(board.url, timeout=5) as client:
        assert isinstance(client.transport, XdmaTransport)
        info = client.identify()
    for key, value in PARAMS.items():
        assert info[key] == value, key
    assert info["baud"] == 0                # the virtual board: a byte stream, not a UART
    assert main(["info", "--device", board.url]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^n_max\s+16$", out, re.M) and re.search(r"^width\s+32$", out, re.M)


@needs_verilator
@pytest.mark.parametrize("params", [
    dict(bits=2, encoding="compact", epochs=3),
    dict(bits=4, encoding="pair", levels="optimal", batch=4, delay=1, lr_decay_epochs=1,
         epochs=2, random_state=7),
], ids=["compact2", "pair4-optimal-batch"])
def test_regressor_over_xdma_gives_golden_words(board, diabetes, params):
    X, y = diabetes
    got = ZipMLRegressor(device=board.url, **params).fit(X, y)
    want = ZipMLRegressor(device=golden(), **params).fit(X, y)
    np.testing.assert_array_equal(got.model_words_, want.model_words_)
    assert got.loss_curve_ == want.loss_curve_
    assert got.hw_stats_["rows"] == want.hw_stats_["rows"] == len(y) * params["epochs"]
    assert got.hw_stats_["retries"] == got.hw_stats_["timeouts"] == 0


@needs_verilator
def test_classifier_over_xdma_gives_golden_words(board):
    data = load_dataset("synthetic-classification:300:8", seed=3)
    params = dict(loss="logistic", bits=3, encoding="compact", epochs=2, random_state=1)
    got = ZipMLClassifier(device=board.url, **params).fit(data.X, data.y)
    want = ZipMLClassifier(device=golden(), **params).fit(data.X, data.y)
    np.testing.assert_array_equal(got.model_words_, want.model_words_)
    assert got.hw_stats_["retries"] == 0


@needs_verilator
def test_serve_sim_fifos_command(tmp_path):
    """``zipml serve-sim --fifos DIR``, then ``zipml train --device xdma://DIR/xdma0``."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in PARAMS.items()]
    proc = subprocess.Popen([sys.executable, "-m", "zipml.host.cli", "serve-sim", "--fifos",
                             str(tmp_path), *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = _wait_for_serving(proc, timeout=1800)      # compiles if the build is not cached
        assert url == f"xdma://{tmp_path}/xdma0"
        runs = {}
        for device in (url, "golden"):
            out = tmp_path / f"{device.split(':')[0]}.json"
            assert main(["train", "--device", device, "--width", "32", "--bits", "2",
                         "--epochs", "2", "--json", str(out)]) == 0
            runs[device] = json.loads(out.read_text())
        for key in ("model_words", "snapshots", "loss_curve"):
            assert runs[url][key] == runs["golden"][key], key
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert not any(os.path.exists(p) for p in xdma_paths(str(tmp_path / "xdma0")))


def _wait_for_serving(proc, timeout):
    """The device string in ``zipml serve-sim``'s ``serving ...`` line."""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    text = b""
    while time.monotonic() < deadline:
        for line in text.decode(errors="replace").splitlines(keepends=True):
            if line.startswith("serving ") and line.endswith("\n"):
                return line.split()[1]
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        data = os.read(fd, 1 << 16)
        if not data:
            break
        text += data
    raise AssertionError(f"zipml serve-sim did not start serving:\n"
                         f"{text.decode(errors='replace')[-3000:]}")
