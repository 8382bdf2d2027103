"""Reliability: a faulty link, a device that goes away mid-epoch, Ctrl-C, saturation and seeds.

The fault sweep runs on the in-process protocol device (fast: a lost response costs one short
timeout); one run at a moderate rate goes through the virtual board (the gateware in
Verilator). The full sweep is :func:`zipml.host.reliability.run_reliability` (``zipml bench``).
"""

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from zipml.host.client import BadStateError, DeviceClient, DeviceTimeout, LinkError
from zipml.host.estimators import ZipMLRegressor
from zipml.host.reliability import DEVICE, problem, run_reliability, table, train_over_faults
from zipml.host.train import train
from zipml.host.transport import InProcessTransport, SerialTransport, Transport
from zipml.protocol import Cmd, encode_frame
from zipml.sim.golden import GoldenDevice
from zipml.sim.protocol_device import ProtocolDevice
from zipml.sim.runner import ROOT, simulator_available

VB_PARAMS = dict(width=32, n_max=16, memory_words=512, max_payload=256, batch_max=8)
ZIPML = [sys.executable, "-m", "zipml.host.cli"]


def golden():
    return GoldenDevice(**DEVICE)


def open_sockets():
    """This process's open sockets (file descriptors that link to ``socket:[...]``)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


@pytest.fixture(scope="module")
def board():
    if not simulator_available("verilator"):
        pytest.skip("verilator not installed")
    from zipml.sim.virtual_board import start_virtual_board, stop
    proc, port = start_virtual_board(**VB_PARAMS)
    yield f"socket://127.0.0.1:{port}"
    assert stop(proc) == 0


# --- faults on the link ---------------------------------------------------------------------------

def test_fault_sweep_inproc():
    """Every rate completes with the fault-free words or fails with a LinkError naming the
    request; nothing completes with other words."""
    result = run_reliability(quick=True)
    print("\n" + "\n".join(table(result)))
    runs = {r["rate"]: r for r in result["runs"]}
    assert result["silent_corruption"] == []
    assert runs[0.0]["completed"] and runs[0.0]["retries"] == 0
    assert runs[1e-4]["completed"] and runs[1e-4]["identical"]
    assert not runs[1e-2]["completed"]
    assert runs[1e-2]["error"].startswith(("LinkError", "DeviceTimeout"))
    assert "attempts" in runs[1e-2]["error"] or "within" in runs[1e-2]["error"]
    assert result["limit"] is not None and result["limit"] > 1e-4
    # Smaller frames and more retries carry the run through a rate the defaults do not.
    prob = problem(100)
    hard = train_over_faults(1e-3, prob, epochs=2, retries=12, max_payload=64)
    assert hard["completed"] and hard["identical"] and hard["retries"] > 0, hard


def test_faults_virtual_board(board):
    """Bit flips, drops and duplicates both ways between the host and the gateware: the same
    words as the golden device, with retries."""
    prob = problem(60)
    start = time.monotonic()
    row = train_over_faults(3e-4, prob, epochs=2, seed=3, timeout=0.5, max_payload=128,
                            retries=6, connect=lambda: SerialTransport(board))
    print(f"\nvirtual board at 3e-4: {row['retries']} retries, {row['timeouts']} timeouts, "
          f"faults {row['faults']}, {time.monotonic() - start:.1f} s")
    assert row["completed"] and row["identical"], row
    assert sum(row["faults"].values()) > 0


# --- the device goes away mid-epoch ---------------------------------------------------------------

class Cut(Transport):
    """Passes bytes through until the ``after``-th TRAIN_STREAM write, then ``action()``."""

    def __init__(self, inner, after, action):
        self.inner, self.after, self.action = inner, after, action
        self.streams = 0
        self.silent = False

    def write(self, data):
        if bytes(data)[1] == Cmd.TRAIN_STREAM.value:
            self.streams += 1
            if self.streams == self.after:
                self.silent = self.action() == "silent"
        if not self.silent:
            self.inner.write(data)

    def read(self, max_bytes, timeout):
        return self.inner.read(max_bytes, timeout)

    def close(self):
        self.inner.close()


@pytest.mark.parametrize("fault", ["disconnect", "reset", "timeout"])
def test_device_lost_mid_epoch(fault):
    """A clear error within the timeout; no thread or descriptor left behind."""
    threads, sockets = set(threading.enumerate()), open_sockets()
    server = ProtocolDevice(golden()).serve_tcp()
    prob = problem(200)
    actions = {
        "disconnect": server.stop,
        "reset": lambda: server.device.feed(encode_frame(Cmd.RESET, 0x99)),
        "timeout": lambda: "silent",
    }
    timeout, retries = 0.3, 2
    client = DeviceClient(Cut(SerialTransport(server.url), 3, actions[fault]), timeout=timeout,
                          retries=retries, max_payload=64)
    start = time.monotonic()
    expected = {"disconnect": LinkError, "reset": BadStateError, "timeout": DeviceTimeout}
    with client, pytest.raises(expected[fault]) as info:
        train(client, prob, epochs=2)
    elapsed = time.monotonic() - start
    print(f"\n{fault}: {type(info.value).__name__}: {info.value} ({elapsed:.2f} s)")
    assert elapsed < (retries + 1) * timeout + 1.0
    assert "TRAIN_STREAM" in str(info.value) or fault == "disconnect"
    del info                  # its traceback holds the frames of the failed calls
    server.stop()
    time.sleep(0.05)
    gc.collect()
    assert set(threading.enumerate()) == threads
    assert open_sockets() == sockets
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_resume_after_interruption():
    """A warm-started fit resumed after a failure mid-run equals an uninterrupted fit."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 6))
    y = X @ rng.normal(size=6)
    kw = dict(bits=3, epochs=5, random_state=7, width=32)
    whole = ZipMLRegressor(device=golden(), **kw).fit(X, y)

    device = ProtocolDevice(golden())
    transport = Cut(InProcessTransport(device), 40, lambda: "silent")   # dies in epoch 3
    client = DeviceClient(transport, timeout=0.05, retries=1, max_payload=64)
    est = ZipMLRegressor(device=client, warm_start=True, **kw)
    with pytest.raises(DeviceTimeout):
        est.fit(X, y)
    assert 0 < est.n_iter_ < 5
    done = est.n_iter_
    fresh = DeviceClient(InProcessTransport(ProtocolDevice(golden())))
    est.set_params(device=fresh, epochs=5 - done).fit(X, y)
    assert est.n_iter_ == 5
    np.testing.assert_array_equal(est.model_words_, whole.model_words_)


def test_ctrl_c_during_train():
    """SIGINT during ``zipml train`` against a served device: a message, a clean exit, and the
    device still answers and trains."""
    server = ProtocolDevice(golden()).serve_tcp()
    try:
        proc = subprocess.Popen(
            [*ZIPML, "train", "--device", server.url, "--data", "synthetic:2000:8",
             "--epochs", "500", "--width", "32"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
            # A shell running this suite in the background ignores SIGINT, and children
            # inherit that: give the child the default, as a terminal would.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while server.device.stats["executed"] < 30:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        print(f"\nexit {proc.returncode}: {err.strip()}")
        assert proc.returncode == 130
        assert "Traceback" not in err and "interrupted" in err
        info = subprocess.run([*ZIPML, "info", "--device", server.url], capture_output=True,
                              text=True, cwd=ROOT, timeout=60)
        assert info.returncode == 0 and "magic" in info.stdout, info.stderr
        prob = problem(50)
        with DeviceClient(SerialTransport(server.url)) as client:
            got = train(client, prob, epochs=2, seed=1).words
        np.testing.assert_array_equal(got, train(golden(), prob, epochs=2, seed=1).words)
    finally:
        server.stop()


# --- numeric limits and seeds ---------------------------------------------------------------------

def saturating_problem():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(80, 12))
    return X, X @ rng.normal(size=12) * 100


def test_saturation_rtl_golden_and_warnings(board):
    """A learning rate that drives the fixed-point model into saturation: the gateware and the
    golden model saturate alike, and the estimator and the CLI warn."""
    from zipml.host.train import prepare
    X, y = saturating_problem()
    prob = prepare(X, y)
    want = train(golden(), prob, epochs=3, lr=0.9, seed=2)
    assert want.stats["saturated_rows"] > 0
    with DeviceClient(SerialTransport(board), timeout=5) as client:
        got = train(client, prob, epochs=3, lr=0.9, seed=2)
    np.testing.assert_array_equal(got.words, want.words)
    assert got.stats["saturated_rows"] == want.stats["saturated_rows"]
    assert (np.abs(want.words.astype(np.int64)) >= (1 << 31) - 1).any() or \
        want.stats["saturated_rows"] > 0

    with pytest.warns(UserWarning, match="saturated"):
        ZipMLRegressor(device=board, lr=0.9, epochs=2, width=32).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ZipMLRegressor(device=golden(), lr=1 / 256, epochs=1, width=32).fit(X, y / 100)

    run = subprocess.run([*ZIPML, "train", "--device", board, "--data", "diabetes", "--lr",
                          "0.9", "--epochs", "2", "--width", "32"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "saturated" in run.stderr


def test_same_seed_same_words(board):
    """The same seed gives the same model words on the golden model, the in-process protocol
    device and the virtual board; another seed gives others."""
    prob = problem(70)
    runs = [train(golden(), prob, epochs=3, seed=11).words,
            train(DeviceClient(InProcessTransport(ProtocolDevice(golden()))), prob, epochs=3,
                  seed=11).words]
    with DeviceClient(SerialTransport(board), timeout=5) as client:
        runs.append(train(client, prob, epochs=3, seed=11).words)
    for words in runs[1:]:
        np.testing.assert_array_equal(words, runs[0])
    assert not np.array_equal(train(golden(), prob, epochs=3, seed=12).words, runs[0])
