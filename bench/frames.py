"""The benches' traffic as numpy frame records (wire/records.py): signal frames in, order frames out, reports back.

The bench workload (`fill_signals`) is the same everywhere, micro and end to end: signal k goes to signal id and
instrument g = k % 4 (one strategy each, bench/config), as an ORDER signal of one lot, buying and selling in
turn per instrument, priced one tick inside the reference (a buy one tick below, a sell one tick above), so no
order crosses a working order of its account (no self-match) and positions swing around zero.
"""
import numpy as np

from kernels.dtypes import EXEC_ACK, EXEC_FILL, MSG_EXECUTION_REPORT, MSG_SIGNAL, SIGNAL_ORDER
from wire.records import records


def signal_frames(n):
    return records(MSG_SIGNAL, n)


def report_frames(n):
    return records(MSG_EXECUTION_REPORT, n)


class Instruments:
    """What the workload needs to know of the bench config's instruments: lot, tick and reference price."""

    def __init__(self, config):
        self.lot = np.array([i.lot_size for i in config.instruments], np.float64)
        self.tick = np.array([i.tick_size for i in config.instruments], np.float64)
        self.ref = np.array([i.reference_price for i in config.instruments], np.float64)
        self.n = len(self.lot)


def fill_signals(out, instruments, first_index, seq0, source, ts_ns, ttl_ns=10_000_000_000):
    """Write the bench workload's signals first_index .. first_index + len(out) - 1 into `out` (signal frames).

    seq runs from seq0; ts_ns is a scalar or one value per signal (the intended send times)."""
    n = len(out)
    k = np.arange(first_index, first_index + n)
    g = k % instruments.n
    side = np.where((k // instruments.n) % 2 == 0, 1.0, -1.0)
    out["source"] = source
    out["seq"] = np.arange(seq0, seq0 + n, dtype=np.uint64)
    out["signal_id"] = g
    out["instrument"] = g
    out["kind"] = SIGNAL_ORDER
    out["value"] = side * instruments.lot[g]
    out["price"] = np.round(instruments.ref[g] / instruments.tick[g] - side) * instruments.tick[g]
    out["ts_ns"] = ts_ns
    out["ttl_ns"] = ttl_ns
    return out


def fills_for(orders, now_ns, out, acks=True):
    """Report frames answering each order: an ACK (if `acks`) then a FILL of the whole quantity at its price.
    Writes into `out` (REPORT_FRAME_T, at least 2 x len(orders) long); returns the filled slice."""
    n = len(orders)
    per = 2 if acks else 1
    rec = out[:per * n]
    for k, exec_type in enumerate((EXEC_ACK, EXEC_FILL) if acks else (EXEC_FILL,)):
        r = rec[k::per]
        r["order_id"] = orders["order_id"]
        r["strategy"] = orders["strategy"]
        r["deploy"] = orders["deploy"]
        r["exec_type"] = exec_type
        r["qty"] = orders["qty"] if exec_type == EXEC_FILL else 0
        r["price"] = orders["price"]
        r["leaves"] = 0 if exec_type == EXEC_FILL else orders["qty"]
        r["fee"] = 0.0
        r["ts_ns"] = now_ns
        r["reason"] = 0
    return rec
