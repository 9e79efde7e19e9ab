"""The engine against the standalone simulated OMS (`orchestrator sim-oms`, a real process over loopback TCP):
down at start, dropping the link mid-stream, stalling. The disconnect policy applies, the report says what
happened, and the books balance: every order the engine accepted went to the OMS or was counted unsent.

After a disconnect the engine reconnects with backoff, but its strategies stay HALTED (or REDUCING) until an
operator acts: the link coming back does not re-arm anybody.
"""
import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from kernels.codec import ORDER_FRAME_SIZE
from tests.e2e.e2e_kit import (
    assert_books_balance, derive_config, free_port, market_data_frame, orders_sent, reasons, signal_frame,
)
from tests.e2e.test_bad_input import ROOMY, Source

MOVED = {"halt": "HALTED", "reduce": "REDUCING"}


def tcp_oms_config(tmp_path, port, policy="halt", backoff_ms=(50, 200), **engine):
    """momentum (enabled; trades ESZ5 on signal 0) and pairs (disabled here, so it starts READY: the policy leaves
    it alone)."""
    oms = {"kind": "tcp", "tcp": {"host": "127.0.0.1", "port": port}, "on_disconnect": policy,
           "reconnect_backoff_min_ms": backoff_ms[0], "reconnect_backoff_max_ms": backoff_ms[1]}
    return derive_config(tmp_path / "config", engine={"oms": oms, **engine}, keep={"momentum", "pairs"},
                         strategies={"momentum": ROOMY, "pairs": {"enabled": False}})


def sells(source, n):
    """Sell 1 above the ask: reduces a long position, and never crosses the engine's own working buys."""
    frames = []
    for _ in range(n):
        source.seq += 1
        frames.append(signal_frame(source.seq, source=source.source, value=-1.0, price=6000.5))
    return b"".join(frames)


DRIVERS = [("halt", "event"), ("reduce", "event"), ("halt", "spin")]  # spin: its epoll follows the link's descriptor


@pytest.mark.parametrize("policy, driver", DRIVERS)
def test_oms_when_down_at_start_then_policy_applies_and_link_comes_back(procs, tmp_path, policy, driver):
    port = free_port()
    engine = procs.engine(tcp_oms_config(tmp_path, port, policy), "--driver", driver)
    assert engine.ready["oms"] == {"kind": "tcp", "up": False}
    assert f"oms tcp 127.0.0.1:{port} DOWN" in engine.stderr
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame(), s.good(3))  # flat: no buy reduces anything, so REDUCING refuses them too
    engine.wait_status(lambda r: r["counters"]["rejects"] == 3, "3 rejects")
    oms = procs.sim_oms(port=port)
    engine.wait_status(lambda r: r["oms"]["up"], "the OMS link back up")
    udp.send(s.good(3))  # the link is back, the strategy is not
    engine.wait_status(lambda r: r["counters"]["rejects"] == 6, "6 rejects")
    report = engine.report()
    link = report["oms"]
    assert link["up"] and link["on_disconnect"] == policy and link["oms_disconnects"] == 1
    assert link["transport"]["connect_failures"] >= 1 and link["transport"]["connections"] == 1
    assert report["counters"]["orders"] == 0 and reasons(report) == {"not_active": 6}
    assert report["strategies"]["momentum"]["state"] == MOVED[policy]
    assert report["strategies"]["pairs"]["state"] == "READY"
    assert_books_balance(report)
    assert oms.summary()["orders"] == 0


@pytest.mark.parametrize("policy, driver", [("halt", "event"), ("reduce", "event"), ("reduce", "spin")])
def test_oms_when_link_drops_mid_stream_then_policy_applies_and_unsent_orders_are_counted(procs, tmp_path, policy,
                                                                                          driver):
    oms = procs.sim_oms("--drop-after", "5", "--fill-latency-us", "100000")  # the 5th fill is never due in time
    # a long first backoff: the orders made while the link is down stay unsent, then it reconnects
    engine = procs.engine(tcp_oms_config(tmp_path, oms.port, policy, backoff_ms=(1500, 3000)), "--driver", driver)
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame())
    for filled in range(4):  # one at a time: each filled before the next goes
        udp.send(s.good())
        engine.wait_status(lambda r: r["counters"]["fills"] == filled + 1, f"fill {filled + 1}")
    udp.send(s.good())  # the OMS takes the 5th and hangs up
    engine.wait_status(lambda r: not r["oms"]["up"], "the OMS link to drop")
    dropped = time.monotonic()
    udp.send(sells(s, 3))  # REDUCING admits these: made while the link is down, they cannot be sent
    udp.send(s.good(2))    # buys: refused either way
    engine.wait_status(lambda r: r["counters"]["signals"] == 10, "10 signals")
    # back one backoff (1.5 s) after the drop, not two: an attempt under way is looked at again at once
    engine.wait_status(lambda r: r["oms"]["up"], "the OMS link back up", timeout=dropped + 2.4 - time.monotonic())
    engine.wait_status(lambda r: r["counters"]["reconcile_mismatch"] == 1, "the 5th order reconciled")
    report = engine.report()
    link, momentum = report["oms"], report["strategies"]["momentum"]
    unsent = 3 if policy == "reduce" else 0
    assert link["up"] and link["oms_disconnects"] == 1 and link["transport"]["connections"] == 2
    assert link["orders_unsent"] == unsent and report["counters"]["orders"] == 5 + unsent
    assert reasons(report)["not_active"] == 2 + 3 - unsent
    assert momentum["state"] == MOVED[policy]  # still: the link came back, the strategy waits for an operator
    assert_books_balance(report)
    counts = oms.summary()
    assert counts["connections"] == 2 and counts["dropped"] == 1
    assert counts["orders"] == orders_sent(report) == 5
    # The 5th order reached the OMS, which hung up before its reports went out (and canceled it: cancel on
    # disconnect). After the reconnect the engine asks how the OMS sees it: done, nothing filled; released.
    assert momentum["open_orders"] == 0 and momentum["fills"] == 4
    assert link["reconciliations"] == 1 and link["status_requests"] == 1
    assert report["counters"]["reconcile_mismatch"] == 1 and report["counters"]["reconcile_fills"] == 0
    assert link["orders"]["unacknowledged"] == 0 and counts["status_replies"] == 1


def test_oms_when_stalled_then_back_pressure_is_counted_and_no_order_is_lost(procs, tmp_path):
    """The OMS stops reading for 1.5 s after its first order. Orders queue in the socket (about 4 MB on Linux
    loopback: 45k orders), then in the engine's transmit buffer (back-pressure, counted), and signals wait in
    their ring (or are dropped there, counted). When the OMS reads again every order the engine accepted
    reaches it and is filled."""
    oms = procs.sim_oms("--stall-after", "1", "--stall-ms", "1500")
    roomy = {"sizing": {"max_position": 10**9},
             "limits": {"max_order_qty": 100, "max_open_orders": 1 << 20, "rate_per_second": 1e9, "burst": 1e9,
                        "max_order_notional": 1e9, "daily_loss_limit": 1e12},
             "breakers": {"max_consecutive_rejects": 10**6, "ratio_min_orders": 10**6, "max_drawdown": 1e12,
                          "loss_limit": 1e12}}
    config = derive_config(
        tmp_path / "config", keep={"index_arbitrage"}, strategies={"index_arbitrage": roomy},
        # the stall is the point here: a watch patient enough that the link is not given up (test_oms_watch.py)
        engine={"max_open_orders": 1 << 17, "oms": {"kind": "tcp", "tcp": {"host": "127.0.0.1", "port": oms.port},
                                                    "ack_timeout_ms": 600_000, "stall_ms": 600_000}},
        accounts={"futures": {"max_gross_notional": 1e14, "max_net_notional": 1e14, "daily_loss_limit": 1e12}})
    engine = procs.engine(config)
    # index_arbitrage trades ESZ5 (0), AAPL (2), MSFT (3), NVDA (4): spread the working orders over them
    lots = {0: (1, 6000.25), 2: (100, 230.6), 3: (100, 420.4), 4: (100, 180.2)}
    udp, tcp = procs.udp(engine), procs.tcp(engine)
    seq = 0

    def buys(n):
        nonlocal seq
        frames = []
        for k in range(n):
            instrument = (0, 2, 3, 4)[k % 4]
            qty, price = lots[instrument]
            seq += 1
            frames.append(signal_frame(seq, signal_id=0, instrument=instrument, value=float(qty), price=price))
        return b"".join(frames)

    # more than the socket buffers hold (the send buffer grows to tcp_wmem's max) plus the engine's 1 MB tx
    wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    per_piece = 5000
    pieces = min(40, -(-(wmem_max + (1 << 20)) // (ORDER_FRAME_SIZE * per_piece)) + 1)
    udp.send(market_data_frame(), buys(1))  # the OMS takes this one, then stalls
    engine.wait_status(lambda r: r["counters"]["orders"] == 1, "the first order")
    for _ in range(pieces):
        tcp.send(buys(per_piece))
        time.sleep(0.02)
    sent = 1 + pieces * per_piece

    def settled(r):  # every signal taken in, every order filled; or an execution report lost (fills never catch up)
        c = r["counters"]
        return c["report_ring_full"] or (c["signals"] + c["signal_ring_full"] == sent and c["fills"] == c["orders"]
                                         and r["oms"]["orders_pending"] == 0)

    done = engine.wait_status(settled, "every order filled", timeout=90)  # 2 shared cores, ~200k orders
    assert done["counters"]["report_ring_full"] == 0
    report = engine.report()
    counters, link = report["counters"], report["oms"]
    assert link["oms_backpressure"] > 0 and link["transport"]["backpressure"] > 0
    assert counters["signals"] + counters["signal_ring_full"] == sent
    assert counters["orders"] == counters["signals"] and counters["fills"] == counters["orders"]
    assert link["orders_unsent"] == 0 and link["orders_pending"] == 0 and link["transport"]["pending_bytes"] == 0
    assert counters["report_ring_full"] == 0  # no execution report lost on the way in
    assert_books_balance(report)
    assert report["strategies"]["index_arbitrage"]["open_orders"] == 0
    counts = oms.summary()
    assert counts["stalls"] == 1 and counts["orders"] == counts["acks"] == counts["fills"] == counters["orders"]
    assert done["counters"]["orders"] == counters["orders"]


def test_oms_when_engine_dies_with_a_fill_on_the_wire_then_restart_reconciles_it_flagged(procs, tmp_path):
    """The OMS fills an order and writes the fill while the engine is frozen; the engine is then killed, so the
    fill never reaches its journal. Restarted, it recovers the order as working, asks the OMS, learns of the
    fill, applies it flagged (reconciled) and, as configured, turns reduce-only until an operator looks."""
    oms = procs.sim_oms("--fill-latency-us", "300000")
    config = derive_config(tmp_path / "config", keep={"momentum"}, strategies={"momentum": ROOMY}, engine={
        "oms": {"kind": "tcp", "tcp": {"host": "127.0.0.1", "port": oms.port}, "on_mismatch": "reduce"}})
    engine = procs.engine(config)
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame(), s.good())
    engine.wait_status(lambda r: r["counters"]["orders_acked"] == 1, "the order acknowledged")
    engine.popen.send_signal(signal.SIGSTOP)
    time.sleep(1.0)  # the fill is due 0.3 s after the order: the OMS writes it to a socket nobody reads
    engine.popen.send_signal(signal.SIGKILL)
    engine.popen.wait(10)

    restarted = procs.engine(config, name="engine-restarted")
    restarted.wait_status(lambda r: r["counters"]["reconcile_fills"] == 1, "the missed fill reconciled")
    report = restarted.report()
    momentum, counters = report["strategies"]["momentum"], report["counters"]
    assert momentum["positions"]["ESZ5"]["qty"] == 1 and momentum["fills"] == 1 and momentum["open_orders"] == 0
    assert counters["reconcile_mismatch"] == 1 and counters["orders_filled"] == 1
    assert momentum["state"] == "REDUCING"  # on_mismatch = "reduce"
    assert report["oms"]["reconciliations"] == 1 and report["oms"]["status_requests"] == 1
    assert "reconciliation: 1 orders differ from the OMS" in restarted.stderr
    counts = oms.summary()
    assert counts["orders"] == counts["fills"] == counts["status_replies"] == 1


def test_oms_when_engine_dies_with_a_kill_switch_in_flight_then_restart_keeps_it_and_reconciles(procs, tmp_path):
    """The kill switch is journaled and the process dies before its Cancel leaves (crash point
    command.kill_switch). Restarted, the switch is on (replayed from the journal); the OMS, which canceled the
    order when the connection ended, says so when asked, and the books release it."""
    oms = procs.sim_oms("--fill-latency-us", "30000000")  # the order rests until then
    config = derive_config(tmp_path / "config", keep={"momentum"}, strategies={"momentum": ROOMY}, engine={
        "oms": {"kind": "tcp", "tcp": {"host": "127.0.0.1", "port": oms.port}}})
    engine = procs.engine(config, env={"ORCHESTRATOR_CRASH_AT": "command.kill_switch"})
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame(), s.good())
    engine.wait_status(lambda r: r["counters"]["orders_acked"] == 1, "the order acknowledged")
    code, out, err = procs.run("ctl", "kill", "--strategy", "momentum", "on", "--url", engine.ready["api"],
                               name="ctl")
    assert code == 3, (code, out, err)  # the engine died under it
    assert engine.wait(10) == -signal.SIGKILL

    restarted = procs.engine(config, name="engine-restarted")
    restarted.wait_status(lambda r: r["counters"]["reconcile_mismatch"] == 1, "the order reconciled")
    udp = procs.udp(restarted)
    udp.send(s.good())  # the switch is on: refused
    restarted.wait_status(lambda r: r["counters"]["rejects"] == 1, "the refusal")
    report = restarted.report()
    momentum = report["strategies"]["momentum"]
    assert momentum["open_orders"] == 0 and momentum["positions"].get("ESZ5", {"qty": 0})["qty"] == 0
    assert reasons(report) == {"kill_switch": 1}
    assert report["counters"]["orders_canceled"] == 1 and report["oms"]["status_requests"] == 1
    counts = oms.summary()
    assert counts["orders"] == 1 and counts["status_replies"] == 1  # its fill was due in 30 s: never sent
    assert report["counters"]["fills"] == 0
    code, out, err = procs.run("replay", str(config), "--json", name="replay")  # the journal gives the same state
    assert code == 0 and json.loads(out)["state_digest"] == report["state_digest"], err
