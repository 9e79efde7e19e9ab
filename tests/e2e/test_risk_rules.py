"""The risk rules of the trust issue against the real engine over loopback: side blocks, the duplicate-order
window, a mark that is too old (fail closed), and fills the venue priced off the band (applied, flagged, and a
breaker that trips on them). Each sends the offending input and checks the reason, the counters and the books."""
import socket

from kernels.dtypes import EXEC_FILL
from tests.e2e.e2e_kit import ESZ5, derive_config, market_data_frame, reasons, signal_frame
from tests.e2e.test_oms_faults import tcp_oms_config
from wire.frames import encode_frame, iter_frames
from wire.schema import ExecutionReport


def momentum_only(tmp_path, strategy=None, instruments=None):
    config = derive_config(tmp_path / "config", keep=["momentum"], strategies={"momentum": strategy or {}})
    if instruments:
        path = config / "instruments.toml"
        path.write_text(path.read_text().replace('symbol = "ESZ5"', 'symbol = "ESZ5"\n' + instruments, 1))
    return config


def test_risk_when_a_strategy_is_sell_only_then_a_buy_is_denied_and_a_sell_goes(procs, tmp_path):
    engine = procs.engine(momentum_only(tmp_path, {"limits": {"sides": "sell_only"}}))
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5))
    udp.send(signal_frame(1, value=1.0, price=6000.25), signal_frame(2, value=-1.0, price=5999.75))
    report = engine.wait_status(lambda r: r["counters"]["signals"] == 2, "two signals")

    assert reasons(report) == {"side_blocked": 1} and report["counters"]["orders"] == 1


def test_risk_when_an_account_is_buy_only_then_a_sell_is_denied_at_the_account_level(procs, tmp_path):
    config = derive_config(tmp_path / "config", keep=["momentum"], accounts={"futures": {"sides": "buy_only"}})
    engine = procs.engine(config)
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5))
    udp.send(signal_frame(1, value=1.0, price=6000.25), signal_frame(2, value=-2.0, price=6000.5))
    report = engine.wait_status(lambda r: r["counters"]["signals"] == 2, "two signals")

    # the sell of 2 against a long of at most 1 adds short risk: the account's rule, not the strategy's
    assert reasons(report) == {"side_blocked_account": 1} and report["counters"]["orders"] == 1
    assert report["strategies"]["momentum"]["rejects"]["by_level"] == {"account": 1}


def test_risk_when_the_same_order_comes_twice_within_the_window_then_the_second_is_denied(procs, tmp_path):
    engine = procs.engine(momentum_only(tmp_path, {"limits": {"duplicate_window_ms": 60_000}}))
    udp = procs.udp(engine)
    udp.send(market_data_frame(ESZ5, bid=5999.0, ask=6001.0, last=6000.0))
    udp.send(signal_frame(1, value=1.0, price=5998.0), signal_frame(2, value=1.0, price=5998.0),
             signal_frame(3, value=1.0, price=5997.75))  # a different price: not a duplicate
    report = engine.wait_status(lambda r: r["counters"]["signals"] == 3, "three signals")

    assert reasons(report) == {"duplicate_order": 1} and report["counters"]["orders"] == 2


def test_risk_when_the_mark_is_older_than_allowed_then_orders_are_denied_until_market_data_comes(procs, tmp_path):
    engine = procs.engine(momentum_only(tmp_path, instruments="max_mark_age_ms = 60_000"))
    udp = procs.udp(engine)
    udp.send(signal_frame(1, value=1.0, price=6000.25))  # no market data yet: the reference is not confirmed
    engine.wait_status(lambda r: r["counters"]["signals"] == 1, "the first signal")
    udp.send(market_data_frame(ESZ5), signal_frame(2, value=1.0, price=6000.25))
    report = engine.wait_status(lambda r: r["counters"]["signals"] == 2, "the second signal")

    assert reasons(report) == {"mark_stale": 1} and report["counters"]["orders"] == 1
    assert report["strategies"]["momentum"]["positions"]["ESZ5"]["qty"] in (0, 1)


def test_risk_when_the_venue_fills_off_the_band_then_applied_flagged_counted_and_the_breaker_trips(procs, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        config = tcp_oms_config(tmp_path, listener.getsockname()[1])
        path = config / "strategies" / "momentum.toml"
        path.write_text(path.read_text().replace("[breakers]", "[breakers]\nmax_off_band_fills = 1"))
        engine = procs.engine(config)
        oms, _ = listener.accept()
        with oms:
            udp = procs.udp(engine)
            udp.send(market_data_frame(ESZ5), signal_frame(1, value=2.0, price=6000.25))
            data = oms.recv(4096)  # the order frame (88 bytes: one read on loopback)
            (_, order), = iter_frames(data)
            fill = ExecutionReport(order_id=order.order_id, strategy=order.strategy, deploy=order.deploy,
                                   exec_type=EXEC_FILL, qty=2, price=9000.0, leaves=0, fee=0.0, ts_ns=0, reason=0)
            oms.sendall(encode_frame(fill))  # 50% above the mark: a venue's fact, but not a believable one
            report = engine.wait_status(lambda r: r["counters"]["fills"] == 1, "the fill")

    momentum = report["strategies"]["momentum"]
    assert momentum["positions"]["ESZ5"]["qty"] == 2 and momentum["positions"]["ESZ5"]["avg_price"] == 9000.0
    assert report["counters"]["fill_off_band"] == 1
    assert momentum["state"] == "HALTED" and momentum["breaker"]["trip_cause"] == "off_band_fills"
