"""What a running or finished engine tells its operator: the live table, the final report, the API's reads."""
import itertools
import os
import time

import msgspec
from rich.table import Table

from adapters.udp import UdpReceiver
from engine.control import ACCOUNT_KEYS
from kernels.arena import FIRST_LISTENER, MAX_SOURCES, ROLE_DATA_ON_OMS, ROLE_REPORT_OFF_OMS, S_TX_LEN, SOURCE_OMS
from kernels.codec import ORDER_FRAME_SIZE
from kernels.dtypes import COUNTER_NAMES, KILL_ACCOUNT, KILL_GLOBAL, NO_TRIP, REASON_NAMES, STATE_NAMES, TRIP_NAMES


def final_report(service):
    """Everything worth knowing after a run, as plain JSON-ready data. Call it before `service.close()`: some
    facts (UDP datagrams the kernel dropped, bytes the OMS link still holds) are read from open sockets."""
    engine = service.engine
    state = engine.state
    elapsed = max((engine.clock() - service.started_ns) / 1e9, 1e-9)
    counters = {name: int(value) for name, value in zip(COUNTER_NAMES, state.counters)}
    latency = service.latency.signal_to_order
    strategies = strategies_report(state)
    for s, name in enumerate(state.strategy_names):
        strategies[name]["signal_to_order_us"] = {
            "p50": latency.percentile(50, s) / 1000, "p99": latency.percentile(99, s) / 1000,
            "count": latency.total(s)}
    return {
        "engine": state.config.engine.name,
        "seconds": round(elapsed, 3),
        "state_digest": state.digest(),
        "signals_per_second": round(counters["signals"] / elapsed, 1),
        "counters": counters,
        "oms": oms_report(engine),
        "transports": transports_report(engine),
        "journal": None if engine.journal is None else journal_report(service),
        "mirror": None if engine.mirror is None else engine.mirror.report(),  # the Redis mirror (docs/redis.md)
        "instruments": instruments_report(state),
        "signal_to_order_us": {"p50": latency.percentile(50) / 1000, "p99": latency.percentile(99) / 1000,
                               "p99.9": latency.percentile(99.9) / 1000, "count": latency.total()},
        "strategies": strategies,
        **({} if service.monitor is None else service.monitor.report()),
        **({} if service.api is None else {"api": service.api.stats.as_dict()}),
    }


def oms_report(engine):
    """The OMS link: its policy, whether it is up, the driver's counts of it, and its transport (or the in-batch
    venue's counts)."""
    state = engine.state
    oms_config = state.config.engine.oms
    return {"kind": oms_config.kind, "up": engine.oms_up, "on_disconnect": oms_config.on_disconnect,
            **engine.stats.as_dict(),
            # encoded orders the OMS link has not taken yet (back-pressure at the end of the run)
            "orders_pending": int(state.scalars[S_TX_LEN]) // ORDER_FRAME_SIZE,
            # what became of every order placed: filled + canceled (unsent ones included) + rejected + working
            # + unacknowledged = placed
            "orders": engine.order_fates(),
            "watch": {"ack_timeout_ms": oms_config.ack_timeout_ms, "max_unacked": oms_config.max_unacked,
                      "stall_ms": oms_config.stall_ms, "unacked_late": engine.unacked,
                      "down_reason": engine.down_reason},
            **({"venue": venue_report(state)} if engine.oms is None else
               {"transport": {**engine.oms.stats.as_dict(), **_role_drops(state, SOURCE_OMS),
                              "pending_bytes": int(getattr(engine.oms, "pending_bytes", 0))}})}


def transports_report(engine):
    """Each listening transport by kind: its address, counts and the frames it sent off its role."""
    return {kind: {**_transport(t), **_role_drops(engine.state, source)}
            for source, (kind, t) in enumerate(_inbound(engine), start=FIRST_LISTENER)}


def journal_report(service):
    """The journal's and the snapshots' counts, and what recovery did at start."""
    journal = service.engine.journal
    writer = journal.writer
    return {"last_seq": journal.last_seq, "bytes_written": writer.bytes_written, "syncs": writer.syncs,
            "errors": journal.errors, "failing": journal.failing,
            "snapshots": None if service.snapshots is None else service.snapshots.as_dict(),
            "recovered": None if service.recovered is None else msgspec.to_builtins(service.recovered)}


def venue_report(state):
    """What the in-batch simulated venue did: its counts, and the reports still due in stream time."""
    v = state.venue[0]
    counts = {name: int(v[name]) for name in ("orders", "acks", "rejects", "partial_fills", "fills", "canceled",
                                              "filled_qty", "pending")}
    return {**counts, "fees": float(v["fees"]), "resting": int(state.venue_orders["resting"].sum())}


def strategies_report(state):
    """Per strategy name: state, positions, P&L (with net = realized + unrealized - fees), orders, rejects."""
    strategies = state.snapshot()
    for row in strategies.values():
        pnl = row["pnl"]
        pnl["net"] = pnl["realized"] + pnl["unrealized"] - pnl["fees"]
    return strategies


def _inbound(engine):
    kinds = {"UdpReceiver": "udp", "TcpServer": "tcp", "AeronReceiver": "aeron"}
    return [(kinds.get(type(t).__name__, type(t).__name__), t) for t in engine.inbound]


def _role_drops(state, source):
    """Frames a source sent off its role (kernels/batch.py): execution reports not on the OMS link, signals and
    market data on it; all dropped."""
    row = state.role_drops[min(source, MAX_SOURCES - 1)]
    return {"reports_dropped_by_role": int(row[ROLE_REPORT_OFF_OMS]),
            "data_dropped_by_role": int(row[ROLE_DATA_ON_OMS])}


def _transport(t):
    out = {"address": "%s:%d" % t.address[:2]} if hasattr(t, "address") and not t.closed else {}
    out.update(t.stats.as_dict())
    if isinstance(t, UdpReceiver) and not t.closed:
        out["kernel_drops"] = udp_kernel_drops(t.fileno())
    return out


def udp_kernel_drops(fd):
    """Datagrams the kernel dropped for this socket (receive buffer full): Linux's /proc/net/udp `drops`
    column for the socket's inode; None where that is not readable."""
    inode = os.fstat(fd).st_ino
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[9]) == inode:
                        return int(fields[12])
        except (OSError, IndexError, ValueError, StopIteration):
            continue
    return None


def instruments_report(state):
    """The market as the engine last saw it, in currency (mark is what unrealized P&L is computed at; bid, ask
    and last are 0 before the first market data), and each instrument's contract."""
    out = {}
    for i, symbol in enumerate(state.instrument_symbols):
        row = state.instruments[i]
        tick = float(row["tick_size"])
        out[symbol] = {key: int(row[f"{key}_ticks"]) * tick for key in ("bid", "ask", "last", "mark")}
        out[symbol].update(multiplier=float(row["multiplier"]), tick_size=tick, lot_size=int(row["lot_size"]),
                           price_band_pct=float(row["band_pct"]), tradable=bool(row["tradable"]),
                           reference_price=int(row["ref_px_ticks"]) * tick, market_data_ns=int(row["md_ts_ns"]))
    return out


# the columns of a strategy's row that its summary shows, read at once
_SUMMARY = ("state", "trip_cause", "deploy", "account", "kill", "signals", "orders", "open_orders", "fills",
            "rejects", "realized", "unrealized", "fees")


MOVES_SCANNED = 128  # how many of the latest applied commands `last_moves` looks through


def last_moves(results, names=None):
    """{strategy name: what last moved it}, from the latest MOVES_SCANNED applied commands (`Control.results`):
    an operator's transition ({command, id, seq, from, to}) or the engine's own halt_all ({..., policy,
    reason}, e.g. "OMS link lost"). A breaker's trip is not a command: its cause is the strategy's trip_cause."""
    moves = {}
    for result in itertools.islice(reversed(results.values()), MOVES_SCANNED):
        command, detail = result.command, result.detail
        if command == "transition":
            moved = (detail["strategy"],)
        elif command == "halt_all":
            moved = detail["moved"]
        else:
            continue
        for name in moved:
            if name not in moves and (names is None or name in names):
                moves[name] = {"command": result.command, "id": result.id, "seq": result.seq,
                               **{k: v for k, v in detail.items() if k not in ("strategy", "moved")}}
    return moves


def strategy_summaries(state, results=None):
    """A line per strategy name: state, trip cause, what last moved it (of `results`, the applied commands),
    deploy, account, counts, P&L and the positions held. Built from one `tolist` of the table (a few
    microseconds), not field by field."""
    used = len(state.strategy_names)  # the table has rows to spare for strategies registered later
    rows = state.strategies[:used][list(_SUMMARY)].tolist()
    held = state.positions["qty"][:used].tolist()
    moves = last_moves(results or {})
    out = {}
    for s, name in enumerate(state.strategy_names):
        row = dict(zip(_SUMMARY, rows[s]))
        realized, unrealized, fees = row.pop("realized"), row.pop("unrealized"), row.pop("fees")
        cause = row.pop("trip_cause")
        out[name] = {**row, "state": STATE_NAMES[row["state"]], "trip_cause": None if cause == NO_TRIP else
                     TRIP_NAMES[cause], "moved_by": moves.get(name), "version": state.deploys[s][-1].version,
                     "account": state.account_names[row["account"]], "kill": bool(row["kill"]),
                     "pnl": {"realized": realized, "unrealized": unrealized, "fees": fees,
                             "net": realized + unrealized - fees},
                     "positions": {state.instrument_symbols[i]: q for i, q in enumerate(held[s]) if q}}
    return out


def strategy_detail(state, s, results=None):
    """Everything about strategy s: its report (strategy_snapshot), why it is in its state (trip cause, breaker
    counts, kill switches, the applied command of `results` that last moved it), the limits it runs with, its
    deploy history and its shadow runs."""
    out = state.strategy_snapshot(s)
    out["moved_by"] = last_moves(results or {}, {state.strategy_names[s]}).get(state.strategy_names[s])
    row = state.strategies[s]
    spec = state.deploys[s][-1].spec
    account_kill = int(state.accounts[row["account"]]["kill"])
    out["breaker"].update(action=spec.breakers.action, tripped_at_ns=int(row["tripped_at_ns"]),
                          window_orders=int(row["window_orders"]), window_rejects=int(row["window_rejects"]),
                          window_start_ns=int(row["window_start_ns"]))
    out["kill_switch"] = {"strategy": bool(row["kill"]), "account": bool(account_kill & KILL_ACCOUNT),
                          "global": bool(account_kill & KILL_GLOBAL)}
    out["order_type"], out["subscriptions"] = spec.order_type, list(spec.signals)
    out["limits"] = {section: msgspec.to_builtins(getattr(spec, section)) for section in ("sizing", "limits",
                                                                                            "breakers")}
    out["deploys"] = [{"number": d.number, "version": d.version, "config_hash": d.config_hash, "source": d.source,
                       "deployed_ns": d.deployed_ns, "actor": d.actor, "note": d.note} for d in state.deploys[s]]
    shadows = [state.shadow_report(run) for run in state.shadows if run.live == s]
    if shadows:
        out["shadows"] = shadows
    return out


def accounts_report(state):
    """Per account name: its limits as they run, its kill switches, exposure, P&L and strategies."""
    out = {}
    for a, name in enumerate(state.account_names):
        row, spec = state.accounts[a], state.account_specs[a]
        kill = int(row["kill"])
        out[name] = {"id": a, "limits": {key: getattr(spec, key) for key in ACCOUNT_KEYS},
                     "kill_switch": {"account": bool(kill & KILL_ACCOUNT), "global": bool(kill & KILL_GLOBAL)},
                     "gross": float(row["gross"]), "net": float(row["net"]),
                     "pnl": {"realized": float(row["realized"]), "unrealized": float(row["unrealized"]),
                             "fees": float(row["fees"])},
                     "strategies": [n for s, n in enumerate(state.strategy_names)
                                    if state.strategies[s]["account"] == a]}
    return out


LIVE_INTERVAL_S = 1.0  # the live view is redrawn at most this often
_LIVE_COLUMNS = (("strategy", "<"), ("state", "<"), ("position", "<"), ("P&L", ">"), ("orders", ">"), ("fills", ">"),
                 ("rejects", ">"), ("top reject", "<"), ("p99 us", ">"))
_BAD_INPUT = [k for k, name in enumerate(COUNTER_NAMES) if name.startswith("frame_") or name.endswith(
    ("_unknown_source", "_unknown_id", "_unknown_instrument", "_invalid"))]
_CAPTION = [(name, COUNTER_NAMES.index(name)) for name in ("signals", "orders", "rejects", "fills")]


def live_snapshot(service):
    """What the live view shows, copied out of the arena as plain numbers and strings: a few small numpy reads per
    strategy row in use, no rendering (bench/live_view.py measures it). `live_text` draws it."""
    engine = service.engine
    state = engine.state
    n = len(state.strategy_names)
    rows = state.strategies[:n]
    pnl = (rows["realized"] + rows["unrealized"] - rows["fees"]).tolist()
    counts = state.reason_counts[:n]
    top = counts.argmax(axis=1).tolist()
    rejected = counts.any(axis=1).tolist()
    qty = state.positions[:n]["qty"]
    held = [[] for _ in range(n)]
    for s, i in zip(*(a.tolist() for a in qty.nonzero())):
        held[s].append(f"{state.instrument_symbols[i]} {int(qty[s, i]):+d}")
    counters = state.counters.tolist()
    strategies = [(name, STATE_NAMES[state_id], ", ".join(held[s]) or "flat", f"{pnl[s]:,.2f}", str(orders),
                   str(fills), str(rejects), REASON_NAMES[top[s]] if rejected[s] else "",
                   f"{service.latency.p99_us(s):,.1f}")
                  for s, (name, state_id, orders, fills, rejects) in enumerate(zip(
                      state.strategy_names, rows["state"].tolist(), rows["orders"].tolist(), rows["fills"].tolist(),
                      rows["rejects"].tolist()))]
    caption = {name: counters[k] for name, k in _CAPTION}
    caption["bad input"] = sum(counters[k] for k in _BAD_INPUT)
    caption["unsent"] = engine.stats.orders_unsent
    return {"engine": state.config.engine.name, "time": time.strftime("%H:%M:%S"), "oms_up": engine.oms_up,
            "strategies": strategies, "caption": caption}


def live_text(snapshot):
    """The live view as plain text (a title, a row per strategy, the engine's counters that matter), drawn from a
    `live_snapshot`: a few string formats, where a rich Table took milliseconds with the GIL held."""
    header = [name for name, _ in _LIVE_COLUMNS]
    rows = [header, *snapshot["strategies"]]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = [f"{snapshot['engine']}  {snapshot['time']}  OMS {'up' if snapshot['oms_up'] else 'DOWN'}"]
    for k, row in enumerate(rows):
        lines.append("  ".join(f"{cell:{align}{width}}" for cell, (_, align), width in zip(row, _LIVE_COLUMNS, widths)))
        if k == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("  ".join(f"{name} {value:,}" for name, value in snapshot["caption"].items()))
    return "\n".join(lines)


def live_table(service):
    """The live view of `service` now, as text (live_text of a live_snapshot)."""
    return live_text(live_snapshot(service))


_TRANSPORT_FAULTS = ("oversize", "bad_version", "empty", "partial_discarded", "connect_failures", "kernel_drops")


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
    console.print(f"OMS ({oms['kind']}): {'up' if oms['up'] else 'DOWN'}, disconnects {oms['oms_disconnects']} "
                  f"(policy {oms['on_disconnect']}), back-pressure {oms['oms_backpressure']}, orders unsent "
                  f"(canceled locally) {oms['orders_unsent']}, orders still pending {oms['orders_pending']}")
    for kind, t in report["transports"].items():
        faults = {k: v for k, v in t.items() if k in _TRANSPORT_FAULTS and v}
        if faults:
            console.print(f"{kind} {t.get('address', '')}: " + ", ".join(f"{k} {v}" for k, v in faults.items()))
    mirror = report.get("mirror")
    if mirror:  # the Redis mirror (docs/redis.md)
        w = mirror["writer"]
        console.print(f"Redis mirror: {'connected' if mirror['connected'] else 'NOT connected'}, written seq "
                      f"{mirror['written_seq']} of {mirror['last_seq']}, connects {w['connects']}, connect failures "
                      f"{w['connect_failures']}, disconnects {w['disconnects']}, dropped {w['dropped']}, lost "
                      f"{w['lost']}, fills overflow {mirror['fills_overflow']}")
    lat = report["signal_to_order_us"]
    console.print(f"signal -> order latency: p50 {lat['p50']:.1f} us, p99 {lat['p99']:.1f} us, "
                  f"p99.9 {lat['p99.9']:.1f} us over {lat['count']} orders")
