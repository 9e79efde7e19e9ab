"""What a running or finished engine tells its operator: the live table and the final report."""
import time

from rich.table import Table

from kernels.dtypes import COUNTER_NAMES, REASON_NAMES, STATE_NAMES


def final_report(service):
    """Everything worth knowing after a run, as plain JSON-ready data."""
    engine = service.engine
    state = engine.state
    elapsed = max((engine.clock() - service.started_ns) / 1e9, 1e-9)
    counters = {name: int(value) for name, value in zip(COUNTER_NAMES, state.counters)}
    latency = service.latency.signal_to_order
    strategies = state.snapshot()
    for s, name in enumerate(state.strategy_names):
        strategies[name]["signal_to_order_us"] = {
            "p50": latency.percentile(50, s) / 1000, "p99": latency.percentile(99, s) / 1000,
            "count": latency.total(s)}
    return {
        "engine": state.config.engine.name,
        "seconds": round(elapsed, 3),
        "signals_per_second": round(counters["signals"] / elapsed, 1),
        "counters": counters,
        "oms": {"up": engine.oms_up, **engine.stats.as_dict(), "transport": engine.oms.stats.as_dict()},
        "transports": {type(t).__name__: t.stats.as_dict() for t in engine.inbound},
        "signal_to_order_us": {"p50": latency.percentile(50) / 1000, "p99": latency.percentile(99) / 1000,
                               "p99.9": latency.percentile(99.9) / 1000, "count": latency.total()},
        "strategies": strategies,
    }


def live_table(service):
    """One screen: a row per strategy, and the engine's counters that matter under it."""
    engine = service.engine
    state = engine.state
    table = Table(title=f"{state.config.engine.name}  {time.strftime('%H:%M:%S')}  "
                        f"OMS {'up' if engine.oms_up else 'DOWN'}", expand=False)
    for column in ("strategy", "state", "position", "P&L", "orders", "fills", "rejects", "top reject", "p99 us"):
        table.add_column(column, justify="left" if column in ("strategy", "state", "position", "top reject")
                         else "right")
    for s, name in enumerate(state.strategy_names):
        row = state.strategies[s]
        held = [f"{state.instrument_symbols[i]} {int(q):+d}" for i, q in enumerate(state.positions[s]["qty"]) if q]
        counts = state.reason_counts[s]
        top = REASON_NAMES[int(counts.argmax())] if counts.any() else ""
        pnl = float(row["realized"] + row["unrealized"] - row["fees"])
        table.add_row(name, STATE_NAMES[int(row["state"])], ", ".join(held) or "flat", f"{pnl:,.2f}",
                      str(int(row["orders"])), str(int(row["fills"])), str(int(row["rejects"])), top,
                      f"{service.latency.p99_us(s):,.1f}")
    c = dict(zip(COUNTER_NAMES, state.counters))
    bad = sum(int(c[k]) for k in COUNTER_NAMES if k.startswith("frame_") or k.endswith("_unknown_source")
              or k.endswith("_unknown_id") or k.endswith("_unknown_instrument") or k.endswith("_invalid"))
    table.caption = (f"signals {int(c['signals']):,}  orders {int(c['orders']):,}  rejects {int(c['rejects']):,}  "
                     f"fills {int(c['fills']):,}  bad input {bad:,}  unsent {engine.stats.orders_unsent:,}")
    return table


def print_report(report, console):
    """The final report for a person: strategies, then what went wrong, then latency."""
    table = Table(title=f"final report: {report['engine']}, {report['seconds']} s, "
                        f"{report['signals_per_second']:,.0f} signals/s")
    for column in ("strategy", "state", "orders", "fills", "rejects", "realized", "unrealized", "fees", "trips",
                   "p99 us"):
        table.add_column(column, justify="left" if column in ("strategy", "state", "trips") else "right")
    for name, s in report["strategies"].items():
        table.add_row(name, s["state"], str(s["orders"]), str(s["fills"]), str(s["rejects"]["total"]),
                      f"{s['pnl']['realized']:,.2f}", f"{s['pnl']['unrealized']:,.2f}", f"{s['pnl']['fees']:,.2f}",
                      ", ".join(f"{k} {v}" for k, v in s["breaker"]["trips"].items()),
                      f"{s['signal_to_order_us']['p99']:,.1f}")
    console.print(table)
    reasons = {}
    for s in report["strategies"].values():
        for reason, count in s["rejects"]["by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    if reasons:
        console.print("rejects by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    nonzero = {k: v for k, v in report["counters"].items() if v}
    console.print("engine counters: " + ", ".join(f"{k} {v}" for k, v in nonzero.items()))
    oms = report["oms"]
    console.print(f"OMS: {'up' if oms['up'] else 'DOWN'}, disconnects {oms['oms_disconnects']}, "
                  f"back-pressure {oms['oms_backpressure']}, orders unsent (canceled locally) {oms['orders_unsent']}")
    lat = report["signal_to_order_us"]
    console.print(f"signal -> order latency: p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us, "
                  f"p99.9 {lat['p99.9']:.1f} us over {lat['count']} orders")
