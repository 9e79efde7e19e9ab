"""`orchestrator export`: a journal replayed into Parquet files for analysis (docs/export.md has the schema).

The journal (engine/journal.py records, read by adapters/journal.py JournalReader) goes through a replaying
engine (engine/recovery.py: from the genesis snapshot, every record at its recorded clock), exactly as `replay`
does, so the orders, rejects and fills are the ones the live engine decided, bit for bit. Listeners collect the
outbound rings as the batches run; P&L attribution (engine/attribution.py) folds the fills; the files are
written with pyarrow, one table each: orders, rejects, fills, pnl (per strategy, instrument and deploy/version),
latency (one row per order). pandas (`pd.read_parquet`), polars (`pl.read_parquet`) and duckdb
(`SELECT * FROM 'fills.parquet'`) read them as they are.
"""
import itertools
from pathlib import Path

import numpy as np

from engine.attribution import PnlAttribution
from engine.journal import decode
from engine.recovery import SNAPSHOTS, feed_records, replaying_engine
from engine.snapshot import GENESIS, SUFFIX, read_snapshot, restore
from engine.state import EngineState
from kernels.dtypes import EXEC_TYPE_NAMES, N_REASONS, ORDER_TYPE_NAMES, REASON_NAMES

FILES = ("orders", "rejects", "fills", "pnl", "latency")


class RingCollector:
    """Engine listener: a copy of every order, reject and fill record, in order."""

    def __init__(self):
        self.orders, self.rejects, self.fills = [], [], []

    def on_batch(self, orders, rejects, fills, now_ns):
        self.orders += [chunk.copy() for chunk in orders]
        self.rejects += [chunk.copy() for chunk in rejects]
        self.fills += [chunk.copy() for chunk in fills]

    @staticmethod
    def table(chunks, dtype):
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype)


def export(config, out_dir, journal_dir):
    """Replay the journal in `journal_dir` and write the Parquet files into `out_dir`; return a summary:
    {"records": n, "files": {name: {"path": ..., "rows": n}}, "state_digest": ...}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adapters.journal import JournalReader

    journal_dir, out_dir = Path(journal_dir), Path(out_dir)
    genesis = journal_dir / SNAPSHOTS / f"{GENESIS:020d}{SUFFIX}"
    state = restore(config, *read_snapshot(genesis)) if genesis.exists() else EngineState.build(config)
    collector = RingCollector()
    reader = JournalReader(journal_dir)
    records = ((seq, decode(body)) for seq, body in reader.records(after=0))
    first = next(records, None)
    start_ns = 0 if first is None else getattr(first[1], "time_ns", None) or first[1].at_ns
    records = itertools.chain([first] if first is not None else [], records)
    pnl = PnlAttribution(state, config.engine.pnl, start_ns)
    engine = replaying_engine(state, [collector, pnl])
    n, last_ns = feed_records(engine, records)
    pnl.maintain(max(last_ns, start_ns))

    orders = collector.table(collector.orders, state.orders.dtype)
    rejects = collector.table(collector.rejects, state.rejects.dtype)
    fills = collector.table(collector.fills, state.fills.dtype)
    names = _Names(state)
    tables = {
        "orders": _orders(pa, orders, names),
        "rejects": _rejects(pa, rejects, names),
        "fills": _fills(pa, fills, names),
        "pnl": _pnl(pa, pnl, names),
        "latency": _latency(pa, orders, fills, names),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, table in tables.items():
        path = out_dir / f"{name}.parquet"
        pq.write_table(table, path)
        files[name] = {"path": str(path), "rows": table.num_rows}
    return {"records": n, "last_seq": reader.last_seq, "files": files, "state_digest": state.digest()}


class _Names:
    """Ids to the names the config gives them; deploy numbers to version labels."""

    def __init__(self, state):
        self.state = state
        self.strategies = np.array(list(state.strategy_names) + [""], dtype=object)
        self.instruments = np.array(list(state.instrument_symbols) + [""], dtype=object)
        self.accounts = np.array(list(state.account_names) + [""], dtype=object)
        self.versions = {(s, d.number): d.version for s, history in enumerate(state.deploys) for d in history}

    def strategy(self, ids):
        return self.strategies[np.minimum(ids.astype(np.int64), len(self.strategies) - 1)]

    def instrument(self, ids):
        return self.instruments[np.minimum(ids.astype(np.int64), len(self.instruments) - 1)]

    def account(self, ids):
        return self.accounts[np.minimum(ids.astype(np.int64), len(self.accounts) - 1)]

    def version(self, strategies, deploys):
        return np.array([self.versions.get((int(s), int(d)), "") for s, d in zip(strategies, deploys)], dtype=object)

    def tick(self, instruments):
        return self.state.instruments["tick_size"][instruments.astype(np.int64)]


def _orders(pa, o, names):
    return pa.table({
        "order_id": pa.array(o["order_id"], pa.uint64()),
        "strategy": pa.array(names.strategy(o["strategy"]), pa.string()),
        "deploy": pa.array(o["deploy"], pa.uint32()),
        "version": pa.array(names.version(o["strategy"], o["deploy"]), pa.string()),
        "account": pa.array(names.account(o["account"]), pa.string()),
        "instrument": pa.array(names.instrument(o["instrument"]), pa.string()),
        "side": pa.array(o["side"], pa.int8()),
        "order_type": pa.array(np.array(ORDER_TYPE_NAMES, dtype=object)[o["order_type"].astype(np.int64)]
                               if len(o) else [], pa.string()),
        "qty": pa.array(o["qty"], pa.int64()),
        "price": pa.array(o["price"], pa.float64()),
        "px_ticks": pa.array(o["px_ticks"], pa.int64()),
        "ts_ns": pa.array(o["ts_ns"], pa.int64()),
        "signal_source": pa.array(o["signal_source"], pa.uint32()),
        "signal_seq": pa.array(o["signal_seq"], pa.uint64()),
        "signal_ts_ns": pa.array(o["signal_ts_ns"], pa.int64()),
    })


def _rejects(pa, r, names):
    masks = r["reasons"].astype(np.int64)
    reasons = [[REASON_NAMES[b] for b in range(N_REASONS) if m >> b & 1] for m in masks.tolist()]
    return pa.table({
        "strategy": pa.array(names.strategy(r["strategy"]), pa.string()),
        "instrument": pa.array(names.instrument(r["instrument"]), pa.string()),
        "side": pa.array(r["side"], pa.int8()),
        "qty": pa.array(r["qty"], pa.int64()),
        "price": pa.array(r["px_ticks"] * names.tick(r["instrument"]) if len(r) else [], pa.float64()),
        "px_ticks": pa.array(r["px_ticks"], pa.int64()),
        "reasons": pa.array(reasons, pa.list_(pa.string())),
        "reason_mask": pa.array(r["reasons"], pa.uint32()),
        "ts_ns": pa.array(r["ts_ns"], pa.int64()),
        "signal_source": pa.array(r["signal_source"], pa.uint32()),
        "signal_seq": pa.array(r["signal_seq"], pa.uint64()),
    })


def _fills(pa, f, names):
    tick = names.tick(f["instrument"]) if len(f) else np.zeros(0)
    return pa.table({
        "order_id": pa.array(f["order_id"], pa.uint64()),
        "strategy": pa.array(names.strategy(f["strategy"]), pa.string()),
        "deploy": pa.array(f["deploy"], pa.uint32()),
        "version": pa.array(names.version(f["strategy"], f["deploy"]), pa.string()),
        "account": pa.array(names.account(f["account"]), pa.string()),
        "instrument": pa.array(names.instrument(f["instrument"]), pa.string()),
        "side": pa.array(f["side"], pa.int8()),
        "exec_type": pa.array(np.array(EXEC_TYPE_NAMES, dtype=object)[f["exec_type"].astype(np.int64)]
                              if len(f) else [], pa.string()),
        "qty": pa.array(f["qty"], pa.int64()),
        "leaves": pa.array(f["leaves"], pa.int64()),
        "price": pa.array(f["price"], pa.float64()),
        "fee": pa.array(f["fee"], pa.float64()),
        "realized": pa.array(f["realized"], pa.float64()),
        "order_price": pa.array(f["order_px_ticks"] * tick, pa.float64()),
        "arrival_mark": pa.array(f["arrival_mark_ticks"] * tick, pa.float64()),
        "ts_ns": pa.array(f["ts_ns"], pa.int64()),
        "report_ts_ns": pa.array(f["report_ts_ns"], pa.int64()),
        "order_ts_ns": pa.array(f["order_ts_ns"], pa.int64()),
        "signal_ts_ns": pa.array(f["signal_ts_ns"], pa.int64()),
    })


def _pnl(pa, pnl, names):
    rows = pnl.rows_for_export()
    columns = {"strategy": [], "instrument": [], "deploy": [], "version": [], "realized": [], "unrealized": [],
               "fees": [], "net": [], "fills": []}
    for s, i, deploy, version, total, _ in rows:
        columns["strategy"].append(names.state.strategy_names[s])
        columns["instrument"].append(names.state.instrument_symbols[i])
        columns["deploy"].append(deploy)
        columns["version"].append(version)
        for key in ("realized", "unrealized", "fees"):
            columns[key].append(total[key])
        columns["net"].append(total["realized"] + total["unrealized"] - total["fees"])
        columns["fills"].append(int(pnl.fills[pnl.rows[s, deploy], i]))
    types = {"deploy": pa.uint32(), "fills": pa.int64(), "strategy": pa.string(), "instrument": pa.string(),
             "version": pa.string()}
    return pa.table({key: pa.array(values, types.get(key, pa.float64())) for key, values in columns.items()})


def _latency(pa, o, f, names):
    """One row per order: its signal, its decision, its first and last fill (null when it never filled)."""
    ids = o["order_id"]
    n = len(ids)
    first = np.full(n, -1, np.int64)
    first_report = np.full(n, -1, np.int64)
    last = np.full(n, -1, np.int64)
    count = np.zeros(n, np.int64)
    filled = np.zeros(n, np.int64)
    if n and len(f):
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(ids[order], f["order_id"])
        at_clipped = np.minimum(at, n - 1)
        mine = (at < n) & (ids[order][at_clipped] == f["order_id"])
        rows = order[at_clipped[mine]]
        ts, report_ts = f["ts_ns"][mine], f["report_ts_ns"][mine]
        np.add.at(count, rows, 1)
        np.add.at(filled, rows, f["qty"][mine])
        for k in range(len(rows)):  # fills are in order: the first seen is the first fill
            r = rows[k]
            if first[r] < 0:
                first[r], first_report[r] = ts[k], report_ts[k]
            last[r] = ts[k]
    has = first >= 0
    signal_known = o["signal_ts_ns"] > 0

    def nullable(values, mask):
        return pa.array(values, pa.int64(), mask=~mask)
    return pa.table({
        "order_id": pa.array(ids, pa.uint64()),
        "strategy": pa.array(names.strategy(o["strategy"]), pa.string()),
        "version": pa.array(names.version(o["strategy"], o["deploy"]), pa.string()),
        "instrument": pa.array(names.instrument(o["instrument"]), pa.string()),
        "signal_ts_ns": pa.array(o["signal_ts_ns"], pa.int64()),
        "order_ts_ns": pa.array(o["ts_ns"], pa.int64()),
        "signal_to_order_ns": nullable(o["ts_ns"] - o["signal_ts_ns"], signal_known),
        "first_fill_ts_ns": nullable(first, has),
        "last_fill_ts_ns": nullable(last, has),
        "signal_to_first_fill_ns": nullable(first - o["signal_ts_ns"], has & signal_known),
        "order_to_first_fill_ns": nullable(first_report - o["ts_ns"], has),
        "fills": pa.array(count, pa.int64()),
        "filled_qty": pa.array(filled, pa.int64()),
    })
