"""The chunked, multi-threaded loop of the host's data preparation."""

import threading

import numpy as np
import pytest

from zipml.host.parallel import parallel_chunks, scratch, threads


@pytest.mark.parametrize("total, chunk, n_threads", [(0, 4, "2"), (1, 4, "2"), (10, 3, "1"),
                                                     (1000, 7, "3"), (64, 64, "2")])
def test_every_item_exactly_once(monkeypatch, total, chunk, n_threads):
    monkeypatch.setenv("ZIPML_HOST_THREADS", n_threads)
    seen = np.zeros(total, np.int64)
    ranges = []
    lock = threading.Lock()

    def work(a, b):
        with lock:
            ranges.append((a, b))
        seen[a:b] += 1

    parallel_chunks(total, work, chunk)
    assert np.all(seen == 1)
    assert sorted(ranges) == [(a, min(a + chunk, total)) for a in range(0, total, chunk)]


def test_exceptions_reach_the_caller_and_stop_the_work(monkeypatch):
    monkeypatch.setenv("ZIPML_HOST_THREADS", "2")
    done = []

    def work(a, b):
        if a == 30:
            raise RuntimeError("chunk 30 failed")
        done.append(a)

    with pytest.raises(RuntimeError, match="chunk 30 failed"):
        parallel_chunks(10_000, work, 10)
    assert len(done) < 999


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("ZIPML_HOST_THREADS", "1")
    assert threads() == 1
    monkeypatch.delenv("ZIPML_HOST_THREADS")
    assert 1 <= threads() <= 8


def test_scratch_is_reused_per_thread():
    a = scratch("test_buffer", 10, np.float64)
    b = scratch("test_buffer", 5, np.float64)
    assert b.base is a.base or b.base is a
    assert scratch("test_buffer", 20, np.float64).shape == (20,)
    other = []
    t = threading.Thread(target=lambda: other.append(scratch("test_buffer", 10, np.float64)))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], scratch("test_buffer", 10, np.float64))
