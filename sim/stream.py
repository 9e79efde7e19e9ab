"""Streams of events as columns: what a backtest engine writes, what `orchestrator simulate` reads.

A stream is one table, one row per event, in arrival order (`time_ns` never goes back):
    time_ns     int64    when the event reaches the engine (stream time: the engine's clock follows it)
    msg         uint8    1 signal, 2 market data (kernels/dtypes.py MSG_SIGNAL, MSG_MARKET_DATA)
    instrument  uint32   instrument id
    source, seq, signal_id, kind (uint32, uint64, uint32, uint8), value, price (float64), ts_ns, ttl_ns (int64):
                         the Signal's fields (zero on market data rows)
    bid, ask, last (float64): the MarketData's prices (zero on signal rows); its ts_ns is ts_ns
As Parquet (`write_parquet`, `read_parquet`) the columns have these names and types; docs/simulate.md says the
same for a non-Python writer. `frames(stream)` turns a stream into wire frames, one per event, with numpy and no
per-event Python (wire/records.py fixed-width records), ready to be fed to the engine as chunks.

`generate(config, n, seed)` makes a seeded stream for a config: market data round robin over the instruments
(each a random walk in ticks around its reference price, spread one to three ticks), signals on the
subscribed signal ids between the updates, on instruments their subscribers trade, mostly targets and some
signed orders of one lot, priced through the mid: the same seed, the same stream.
"""
import numpy as np

from kernels.dtypes import MSG_MARKET_DATA, MSG_SIGNAL, SIGNAL_ORDER, SIGNAL_TARGET
from wire.records import MARKET_DATA_FRAME_SIZE, SIGNAL_FRAME_SIZE, records

COLUMNS = (("time_ns", np.int64), ("msg", np.uint8), ("instrument", np.uint32), ("source", np.uint32),
           ("seq", np.uint64), ("signal_id", np.uint32), ("kind", np.uint8), ("value", np.float64),
           ("price", np.float64), ("ts_ns", np.int64), ("ttl_ns", np.int64), ("bid", np.float64),
           ("ask", np.float64), ("last", np.float64))
STREAM_T = np.dtype(list(COLUMNS))
SIGNAL_COLUMNS = ("source", "seq", "signal_id", "instrument", "kind", "value", "price", "ts_ns", "ttl_ns")
MARKET_DATA_COLUMNS = ("instrument", "bid", "ask", "last", "ts_ns")


class StreamError(ValueError):
    """A table that is not a stream: the message names the column or the row."""


def check(stream):
    """Raise StreamError unless `stream` (a STREAM_T array) is one: known message types, time never back."""
    bad = np.flatnonzero((stream["msg"] != MSG_SIGNAL) & (stream["msg"] != MSG_MARKET_DATA))
    if len(bad):
        raise StreamError(f"row {bad[0]}: msg {stream['msg'][bad[0]]} is neither {MSG_SIGNAL} (signal) nor "
                          f"{MSG_MARKET_DATA} (market data)")
    back = np.flatnonzero(np.diff(stream["time_ns"]) < 0)
    if len(back):
        raise StreamError(f"row {back[0] + 1}: time_ns goes back ({stream['time_ns'][back[0]]} -> "
                          f"{stream['time_ns'][back[0] + 1]}); a stream is in arrival order")
    return stream


def frames(stream):
    """(bytes of every event's frame back to back, each frame's size): one frame per event, in stream order."""
    signals = stream["msg"] == MSG_SIGNAL
    sizes = np.where(signals, SIGNAL_FRAME_SIZE, MARKET_DATA_FRAME_SIZE).astype(np.int32)
    width = max(SIGNAL_FRAME_SIZE, MARKET_DATA_FRAME_SIZE)
    rows = np.zeros((len(stream), width), np.uint8)  # each frame left-aligned in a row as wide as the widest
    for msg_type, mask, names, size in ((MSG_SIGNAL, signals, SIGNAL_COLUMNS, SIGNAL_FRAME_SIZE),
                                        (MSG_MARKET_DATA, ~signals, MARKET_DATA_COLUMNS, MARKET_DATA_FRAME_SIZE)):
        recs = records(msg_type, int(mask.sum()))
        for name in names:
            recs[name] = stream[name][mask]
        rows[mask, :size] = recs.view(np.uint8).reshape(len(recs), size)
    return rows[np.arange(width) < sizes[:, None]], sizes  # the rows' bytes in order, padding left out


def generate(config, n, seed=0, start_ns=1_767_225_600_000_000_000, gap_ns=5_000_000):
    """n events for `config`: about one market data update for three signals, `gap_ns` apart on average (the
    default keeps a strategy under the demo's order rates: stream time costs nothing)."""
    rng = np.random.default_rng(seed)
    n_instruments = len(config.instruments)
    tick = np.array([i.tick_size for i in config.instruments])
    ref = np.array([round(i.reference_price / i.tick_size) for i in config.instruments], np.int64)
    signal_ids = np.array(sorted({g for s in config.strategies for g in s.signals}), np.uint32)
    instruments_of = {}  # per signal id: the instruments every subscriber may trade (else the first one's)
    for g in signal_ids.tolist():
        lists = [set(s.instruments) for s in config.strategies if g in s.signals]
        instruments_of[g] = sorted(set.intersection(*lists) or lists[0])
    symbol_ids = {i.symbol: i.id for i in config.instruments}
    out = np.zeros(n, STREAM_T)
    out["time_ns"] = start_ns + np.cumsum(rng.integers(gap_ns // 2, gap_ns * 3 // 2 + 1, n))
    is_md = rng.random(n) < 0.25
    out["msg"] = np.where(is_md, MSG_MARKET_DATA, MSG_SIGNAL)
    # market data: a random walk of the mid in ticks, per instrument, round robin
    md = np.flatnonzero(is_md)
    md_instrument = np.arange(len(md)) % n_instruments
    steps = rng.integers(-2, 3, len(md))
    mid = np.empty(len(md), np.int64)
    for i in range(n_instruments):
        mine = md_instrument == i
        mid[mine] = np.maximum(ref[i] + np.cumsum(steps[mine]), 10)
    half = rng.integers(1, 4, len(md))
    out["instrument"][md] = md_instrument
    out["bid"][md] = (mid - half) * tick[md_instrument]
    out["ask"][md] = (mid + half) * tick[md_instrument]
    out["last"][md] = mid * tick[md_instrument]
    out["ts_ns"][md] = out["time_ns"][md]
    sig = np.flatnonzero(~is_md)
    sid = signal_ids[rng.integers(0, len(signal_ids), len(sig))]
    choices = {g: np.array([symbol_ids[sym] for sym in instruments_of[g]], np.uint32) for g in signal_ids.tolist()}
    instrument = np.empty(len(sig), np.uint32)
    for g, ids in choices.items():
        mine = sid == g
        instrument[mine] = ids[rng.integers(0, len(ids), int(mine.sum()))]
    kind = np.where(rng.random(len(sig)) < 0.15, SIGNAL_ORDER, SIGNAL_TARGET).astype(np.uint8)
    lots = np.array([i.lot_size for i in config.instruments])[instrument]
    value = np.where(kind == SIGNAL_ORDER, rng.choice([-1, 1], len(sig)) * lots, rng.uniform(-1, 1, len(sig)))
    # priced off the latest mid of their instrument (the reference before its first update), up to three ticks
    # through it
    mark = ref[instrument].copy()
    for i in range(n_instruments):
        updates = md[md_instrument == i]
        mine = np.flatnonzero(instrument == i)
        latest = np.searchsorted(updates, sig[mine]) - 1
        mark[mine] = np.where(latest >= 0, mid[md_instrument == i][np.maximum(latest, 0)], ref[i])
    through = rng.integers(0, 4, len(sig))
    px = mark + np.sign(value).astype(np.int64) * through
    out["instrument"][sig] = instrument
    out["source"][sig] = 0
    out["seq"][sig] = np.arange(1, len(sig) + 1)
    out["signal_id"][sig] = sid
    out["kind"][sig] = kind
    out["value"][sig] = value
    out["price"][sig] = px * tick[instrument]
    out["ts_ns"][sig] = out["time_ns"][sig]
    return out


def write_parquet(stream, path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({name: stream[name] for name, _ in COLUMNS}), path)


def read_parquet(path):
    """A stream from a Parquet file with the columns above (extra columns are ignored, a missing one is an
    error naming it; ints and floats are converted to the column's type)."""
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    missing = [name for name, _ in COLUMNS if name not in table.column_names]
    if missing:
        raise StreamError(f"{path}: no column {', '.join(missing)}; a stream has {', '.join(n for n, _ in COLUMNS)}")
    out = np.zeros(table.num_rows, STREAM_T)
    for name, dtype in COLUMNS:
        out[name] = table.column(name).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return check(out)
