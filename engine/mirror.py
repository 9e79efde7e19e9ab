"""The engine's side of the Redis mirror (adapters/redis_mirror.py): records built from the engine's state.

Wiring (the driver's thread, between batches; the journal assigns `seq` and keeps every record for `since`):
    mirror = RedisMirror(config, state.config.engine.name, since=journal.since)
    mirror.open()
    journal.append(record); mirror.submit(record)        # for every state change and fill, as they happen
    for s in range(len(state.strategy_names)):                 # and every N ms, one snapshot per strategy
        record = strategy_snapshot(state, s, journal.next_seq(), now_ns); journal.append(record)
        mirror.submit(record)
    mirror.close()
"""
from adapters.redis_mirror import StrategySnapshot
from kernels.dtypes import STATE_NAMES


def strategy_snapshot(state, s, seq, ts_ns) -> StrategySnapshot:
    """Strategy id `s` of `state` (an EngineState) as a mirror record: its state, running deploy, the positions
    it may trade, holds or has working orders in, and its P&L."""
    row = state.strategies[s]
    positions = state.positions[s]
    held = {symbol: int(p["qty"]) for symbol, p in zip(state.instrument_symbols, positions)
            if p["allowed"] or p["qty"] or p["open_buy"] or p["open_sell"]}  # the pairs state.snapshot() lists
    return StrategySnapshot(
        seq=int(seq), ts_ns=int(ts_ns), strategy=state.strategy_names[s], state=STATE_NAMES[int(row["state"])],
        version=state.deploys[s][-1].version, deploy=int(row["deploy"]), positions=held,
        realized=float(row["realized"]), unrealized=float(row["unrealized"]), fees=float(row["fees"]))
