"""The reliability half of ``zipml bench``: training over a link that flips, drops and duplicates
bytes in both directions.

Each rate trains the same problem with the same seed through
:class:`~zipml.host.transport.FaultyTransport` (every byte, either way, is flipped, dropped or
duplicated with probability ``rate`` each) and compares the raw model words with a fault-free
golden run. A run either completes with identical words (the client's retries and the device's
response cache hide every fault) or stops with :class:`~zipml.host.client.LinkError` /
:class:`~zipml.host.client.DeviceTimeout` naming the request that failed ``retries + 1`` times.
A completed run with different words would be silent corruption: it is reported as such.

The limit
---------
An attempt succeeds when the request and its response both arrive intact, with probability about
``(1 - 3 * rate) ** (request_bytes + response_bytes)``; a run fails when one of its requests
fails ``retries + 1`` attempts in a row. With the defaults (retries 3, frames of up to 256
payload bytes) runs complete up to 3e-4 per byte and fail from 1e-3 (a 280-byte exchange then
survives with probability ~0.43); with retries 12 and 64-byte frames they complete up to 3e-3
and fail at 1e-2. :func:`run_reliability` reports the lowest failing rate as ``limit``;
``python -m zipml.host.reliability`` prints the table (the numbers above come from it).
"""

import time

import numpy as np

from zipml.contract import Encoding, Format
from zipml.host.client import DeviceClient, LinkError
from zipml.host.train import prepare, train
from zipml.host.transport import FaultyTransport, InProcessTransport
from zipml.sim.golden import DeviceError, GoldenDevice
from zipml.sim.protocol_device import ProtocolDevice

__all__ = ["RATES", "QUICK_RATES", "problem", "train_over_faults", "run_reliability", "table",
           "write_reliability_md"]

#: Fault rates per byte and direction of the full sweep, and of the quick one.
RATES = (0.0, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
QUICK_RATES = (0.0, 1e-4, 1e-3, 1e-2)

#: The simulated device: small enough for the virtual board's test build.
DEVICE = dict(width=32, n_max=16, batch_max=8)
FORMAT = Format(Encoding.PAIR, 3)


def problem(rows=200, features=9, seed=0):
    """A seeded noisy linear regression, scaled for the device."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = X @ rng.normal(size=features) + rng.normal(0, 0.1, rows)
    return prepare(X, y)


def _train(device, prob, epochs, seed):
    return train(device, prob, fmt=FORMAT, epochs=epochs, lr=1 / 64, seed=seed)


def train_over_faults(rate, prob, *, epochs=3, seed=0, connect=None, timeout=0.05, retries=3,
                      max_payload=256, golden_words=None):
    """Train ``prob`` through a FaultyTransport at ``rate``; return one row of the table.

    Parameters
    ----------
    connect : callable, optional
        Returns a fresh transport to the device; default: an in-process protocol device.
    golden_words : int array, optional
        The fault-free words to compare with (computed when None).

    Returns
    -------
    dict
        ``rate``, ``completed``, ``identical``, ``error`` (class and message or None),
        ``retries``, ``timeouts``, ``bad_crc``, ``frames_sent``, ``bytes_sent``, ``faults``
        (per kind and direction), ``seconds``, ``rows_per_s``.
    """
    if golden_words is None:
        golden_words = _train(GoldenDevice(**DEVICE), prob, epochs, seed).words
    if connect is None:
        def connect():
            return InProcessTransport(ProtocolDevice(GoldenDevice(**DEVICE)))
    faulty = FaultyTransport(connect(), rate, seed=seed + int(rate * 1e9))
    row = {"rate": rate, "completed": False, "identical": False, "error": None}
    start = time.perf_counter()
    client = None
    try:
        client = DeviceClient(faulty, timeout=timeout, retries=retries, max_payload=max_payload)
        result = _train(client, prob, epochs, seed)
        row["completed"] = True
        row["identical"] = bool(np.array_equal(result.words, golden_words))
    except (LinkError, DeviceError) as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        seconds = time.perf_counter() - start
        stats = client.stats if client is not None else {}
        faulty.close()
    row.update({k: stats.get(k, 0) for k in ("retries", "timeouts", "bad_crc", "frames_sent",
                                               "bytes_sent")})
    row["faults"] = dict(faulty.faults)
    row["seconds"] = seconds
    row["rows_per_s"] = len(prob.y) * epochs / seconds if row["completed"] else 0.0
    return row


def run_reliability(quick=False, *, rates=None, connect=None, timeout=0.05, retries=3,
                    max_payload=256, epochs=None, rows=None, seed=0):
    """The fault-rate sweep; returns a dict for ``bench.json``.

    Returns
    -------
    dict
        ``rates``; ``runs`` (one row per rate, see :func:`train_over_faults`, with
        ``throughput`` relative to the fault-free run); ``limit`` (lowest rate whose run did
        not complete, None if all did); ``silent_corruption`` (rates that completed with other
        words: must be empty); ``settings``.
    """
    rates = tuple(rates if rates is not None else (QUICK_RATES if quick else RATES))
    epochs = epochs or (2 if quick else 4)
    rows = rows or (100 if quick else 400)
    prob = problem(rows, seed=seed)
    golden_words = _train(GoldenDevice(**DEVICE), prob, epochs, seed).words
    runs = [train_over_faults(r, prob, epochs=epochs, seed=seed, connect=connect,
                              timeout=timeout, retries=retries, max_payload=max_payload,
                              golden_words=golden_words) for r in rates]
    base = next((r["rows_per_s"] for r in runs if r["rate"] == 0 and r["completed"]), None)
    for r in runs:
        r["throughput"] = r["rows_per_s"] / base if base else None
    failed = [r["rate"] for r in runs if not r["completed"]]
    out = {"rates": list(rates), "runs": runs, "limit": min(failed) if failed else None,
            "silent_corruption": [r["rate"] for r in runs if r["completed"]
                                  and not r["identical"]],
            "settings": {"timeout": timeout, "retries": retries, "max_payload": max_payload,
                         "epochs": epochs, "rows": rows, "format": str(FORMAT),
                         "device": "inproc" if connect is None else "custom", **DEVICE}}
    if not quick and (retries, max_payload) == (3, 256):
        out["hardened"] = run_reliability(rates=rates, connect=connect, timeout=timeout,
                                          retries=12, max_payload=64, epochs=epochs, rows=rows,
                                          seed=seed)
    done = [r["rate"] for r in runs if r["completed"]]
    out["summary"] = (f"over a link that flips, drops and duplicates bytes, training completed "
                      f"with the fault-free model words at every rate up to {max(done):g} per "
                      f"byte and direction" + (f" and stopped with a clear error from "
                                               f"{out['limit']:g}" if out["limit"] else "")
                      + f" (retries {retries}, {max_payload}-byte frames); silently corrupted "
                      f"runs: {len(out['silent_corruption'])}.")
    return out


_START, _END = "<!-- reliability:start -->", "<!-- reliability:end -->"


def write_reliability_md(result, meta, path):
    """Write (or replace) the reliability section of RESULTS.md."""
    from zipml.host.report import replace_section
    lines = [_START, "## Reliability: training over a faulty link", "",
             f"Generated by `{meta['command']}`, commit `{meta['commit']}`, {meta['date']}. "
             f"{result['summary'][0].upper()}{result['summary'][1:]}", "", "```",
             *table(result), "```", "", _END]
    replace_section(path, _START, _END, "\n".join(lines) + "\n")


def table(result):
    """The sweep as text lines."""
    lines = [f"{'rate':>8s} {'completed':>9s} {'identical':>9s} {'retries':>7s} "
             f"{'timeouts':>8s} {'bad_crc':>7s} {'throughput':>10s}  error"]
    for r in result["runs"]:
        thr = "-" if r["throughput"] is None else f"{r['throughput']:.2f}"
        lines.append(f"{r['rate']:8.0e} {r['completed']!s:>9s} {r['identical']!s:>9s} "
                     f"{r['retries']:7d} {r['timeouts']:8d} {r['bad_crc']:7d} {thr:>10s}  "
                     f"{(r['error'] or '')[:90]}")
    s = result["settings"]
    lines.append(f"limit: {result['limit']} (retries {s['retries']}, max_payload "
                 f"{s['max_payload']}, timeout {s['timeout']} s)")
    if "hardened" in result:
        lines += [""] + table(result["hardened"])
    return lines


if __name__ == "__main__":
    import sys
    print("\n".join(table(run_reliability(quick="--quick" in sys.argv))))
