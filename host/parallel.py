"""Chunked, multi-threaded loops for the host's data preparation (quantize, pack).

numpy releases the GIL inside its array operations, so chunks of one array processed on a few
threads use several cores; chunks small enough to stay in the CPU cache also avoid the memory
traffic of whole-array temporaries. Callers make their results independent of the chunking and
of the thread count (see ``zipml.host.quantize`` for the random streams).

``ZIPML_HOST_THREADS=N`` in the environment sets the number of threads (1: the calling thread
only); by default, the CPUs this process may run on, at most 8.
"""

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["threads", "parallel_chunks", "scratch"]

_pool = None
_pool_pid = None
_pool_lock = threading.Lock()
_local = threading.local()


def threads():
    """Threads the host preparation uses: ``ZIPML_HOST_THREADS`` if set, else the CPUs this
    process may run on (at most 8)."""
    env = os.environ.get("ZIPML_HOST_THREADS")
    if env:
        return max(1, int(env))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _executor(workers):
    global _pool, _pool_pid
    with _pool_lock:
        # A forked child inherits the pool object but not its threads: it makes a new one.
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < workers:
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zipml-host")
            _pool_pid = os.getpid()
        return _pool


def parallel_chunks(total, work, chunk):
    """Call ``work(start, stop)`` for the consecutive ranges of ``chunk`` items that cover
    ``range(total)``, on up to :func:`threads` threads (the calling one included), in no
    particular order; return when all are done. ``work`` must write disjoint outputs. An
    exception stops the remaining chunks and is re-raised here."""
    n_chunks = -(-total // chunk)
    workers = min(threads(), n_chunks)
    if workers <= 1:
        for start in range(0, total, chunk):
            work(start, min(start + chunk, total))
        return
    counter, lock, failed = itertools.count(), threading.Lock(), []

    def run():
        while not failed:
            with lock:
                k = next(counter)
            if k >= n_chunks:
                return
            try:
                work(k * chunk, min((k + 1) * chunk, total))
            except BaseException:
                failed.append(True)
                raise

    futures = [_executor(workers - 1).submit(run) for _ in range(workers - 1)]
    try:
        run()
    finally:
        for f in futures:
            f.result()


def scratch(name, n, dtype):
    """A per-thread scratch array of ``n`` items of ``dtype``, reused from call to call: valid
    until the same thread asks for ``name`` again."""
    store = _local.__dict__
    a = store.get(name)
    if a is None or a.dtype != dtype or len(a) < n:
        a = store[name] = np.empty(n, dtype)
    return a[:n]


def thread_state():
    """A dict private to the calling thread (for state such as positioned generators)."""
    return _local.__dict__.setdefault("state", {})
