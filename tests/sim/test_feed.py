"""sim/feed.py: the synthetic feed over real loopback UDP and TCP to plain socket receivers."""
import argparse
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import numpy as np
import pytest

from engine.cli import peers
from kernels.dtypes import FRAME_HEADER_SIZE, MSG_MARKET_DATA, MSG_SIGNAL, SIGNAL_TARGET
from sim import feed as feed_module
from sim.feed import BAD_KINDS, STALE_AGE_NS, UNKNOWN_ID, Feed, FeedConfig
from wire.frames import FrameError, decode_body, iter_frames, read_header, whole_frames_end

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "config" / "test" / "minimal"


def config(**fields):
    """Configs are built by decoding: constructors do not validate."""
    return msgspec.convert(fields, FeedConfig)


class UdpSink:
    """A plain UDP socket drained by a thread, so a burst never overflows the kernel buffer."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.datagrams = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65536))
            except TimeoutError:
                pass

    def close(self, settle=0.2):
        """Wait until nothing arrived for `settle` seconds, then stop."""
        seen = -1
        while seen != len(self.datagrams):
            seen = len(self.datagrams)
            time.sleep(settle)
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.datagrams


class TcpSink:
    """A plain listening socket; a thread accepts one connection and reads it to EOF."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.data = bytearray()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        conn, _ = self.listener.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                self.data += chunk

    def close(self):
        self._thread.join(10)
        self.listener.close()
        return bytes(self.data)


def run_udp(**fields):
    sink = UdpSink()
    try:
        summary = Feed(config(port=sink.port, **fields)).run()
    finally:
        datagrams = sink.close()
    return summary, datagrams


def decode_datagrams(datagrams):
    """(signals, market data, garbage datagrams) in arrival order."""
    signals, market, garbage = [], [], 0
    for d in datagrams:
        try:
            frames = list(iter_frames(d))
        except FrameError:
            garbage += 1
            continue
        for msg_type, msg in frames:
            (signals if msg_type == MSG_SIGNAL else market).append(msg)
    return signals, market, garbage


def content(signal):
    """What a seed decides (everything but the send time); NaN made comparable."""
    value = "nan" if math.isnan(signal.value) else signal.value
    return (signal.seq, signal.signal_id, signal.instrument, signal.kind, value, signal.price, signal.ttl_ns)


# ---------------------------------------------------------------------------------------------- UDP
def test_feed_udp_when_count_given_then_every_frame_arrives_batched_per_datagram():
    summary, datagrams = run_udp(rate=20_000, count=3000, duration_s=0, md_rate=4000, frames_per_datagram=8,
                                 instruments=[0, 1, 2], start_prices=[100.0, 50.0, 20.0], signal_ids=[1, 2, 3])
    signals, market, garbage = decode_datagrams(datagrams)
    assert summary.signals == len(signals) == 3000 and sum(summary.bad.values()) == 0 and garbage == 0
    assert summary.market_data == len(market) == 600  # the market data due while the signals ran: 3000 * 4000/20000
    assert summary.sends == len(datagrams) and summary.send_errors == 0
    assert max(len(list(iter_frames(d))) for d in datagrams) == 8
    assert [s.seq for s in signals] == list(range(1, 3001))
    assert {s.signal_id for s in signals} == {1, 2, 3} and {s.instrument for s in signals} == {0, 1, 2}
    assert all(-1.0 <= s.value <= 1.0 and s.kind == SIGNAL_TARGET and s.ttl_ns == 1_000_000_000 for s in signals)
    assert Counter(m.instrument for m in market) == {0: 200, 1: 200, 2: 200}  # round robin
    for m in market:
        assert 0 < m.bid < m.ask and m.last in (m.bid, m.ask)
        assert m.bid == round(m.bid, 2) and m.ask == round(m.ask, 2)  # on the tick, printed clean
    near = {0: 100.0, 1: 50.0, 2: 20.0}
    for s in signals:  # a buy above mid, a sell below, within the random walk of a few hundred updates
        assert abs(s.price / near[s.instrument] - 1) < 0.02


def test_feed_udp_when_rate_set_then_achieved_rate_and_duration_match_roughly():
    summary, _ = run_udp(rate=20_000, duration_s=0.25, md_rate=1000)
    assert summary.signals == 5000
    assert 0.24 <= summary.elapsed_s < 0.6
    assert 0.4 * 20_000 < summary.signal_rate <= 20_000 * 1.05
    assert summary.max_lag_ms < 200


def test_feed_udp_when_bad_ratio_then_every_bad_kind_arrives_as_that_kind():
    summary, datagrams = run_udp(rate=50_000, count=4000, duration_s=0, md_rate=5000, bad_ratio=0.35, seed=5,
                                 signal_ids=[1, 2], instruments=[0, 1])
    signals, market, garbage = decode_datagrams(datagrams)
    bad = summary.bad
    assert all(bad[kind] > 50 for kind in BAD_KINDS), bad
    assert summary.signals + sum(bad.values()) == 4000
    assert len(signals) == 4000 - bad["garbage"] and garbage == bad["garbage"]
    assert sum(math.isnan(s.value) for s in signals) == bad["nan"]
    assert sum(s.signal_id == UNKNOWN_ID for s in signals) == bad["unknown_signal"]
    assert sum(s.instrument == UNKNOWN_ID for s in signals) == bad["unknown_instrument"]
    newest = max(s.ts_ns for s in signals)
    assert sum(s.ts_ns <= newest - STALE_AGE_NS + 10**8 and s.ttl_ns == 1_000_000 for s in signals) == bad["stale"]
    top_ask = max(m.ask for m in market)
    assert sum(s.price > 5 * top_ask for s in signals) == bad["price_band"]
    seqs = Counter(s.seq for s in signals)
    assert sum(n - 1 for n in seqs.values()) == bad["duplicate"]
    fresh = sorted(seqs)
    assert fresh == list(range(1, len(fresh) + 1))  # only duplicates reuse a seq; garbage takes none


def test_feed_when_same_seed_then_same_content_whatever_the_timing_and_batching():
    common = dict(count=2000, duration_s=0, bad_ratio=0.2, bad_kinds=[k for k in BAD_KINDS if k != "garbage"],
                  instruments=[0, 1, 2], start_prices=[100.0], signal_ids=[4, 5], seed=99)
    slow = run_udp(rate=10_000, md_rate=2000, **common)
    fast = run_udp(rate=40_000, md_rate=8000, max_batch=7, frames_per_datagram=3, **common)
    other = run_udp(rate=40_000, md_rate=8000, **{**common, "seed": 100})
    (s1, m1, _), (s2, m2, _), (s3, _, _) = (decode_datagrams(run[1]) for run in (slow, fast, other))
    assert len(s1) == 2000 and len(m1) == 400
    assert [content(s) for s in s1] == [content(s) for s in s2]
    assert [(m.instrument, m.bid, m.ask, m.last) for m in m1] == [(m.instrument, m.bid, m.ask, m.last) for m in m2]
    assert slow[0].bad == fast[0].bad
    assert [content(s) for s in s3] != [content(s) for s in s1]


def test_feed_udp_when_to_sim_oms_then_market_data_copied_there():
    sim = UdpSink()
    try:
        summary, datagrams = run_udp(rate=10_000, count=500, duration_s=0, md_rate=4000,
                                     to_sim_oms=f"127.0.0.1:{sim.port}")
    finally:
        copied = sim.close()
    _, market, _ = decode_datagrams(datagrams)
    signals, copied_market, _ = decode_datagrams(copied)
    assert signals == [] and copied_market == market and len(market) == summary.market_data == 200
    assert summary.sim_oms_datagrams == len(copied)


def test_feed_udp_when_high_rate_then_it_keeps_up():
    """The feed is a load generator: 200k signals/s must not strain it (it reached 1M/s on a loaded dev VM)."""
    summary, _ = run_udp(rate=200_000, duration_s=0.3, md_rate=10_000, frames_per_datagram=16)
    assert summary.signals == 60_000
    assert summary.signal_rate > 0.5 * 200_000, summary.line()


# ---------------------------------------------------------------------------------------------- TCP
def test_feed_tcp_when_bad_ratio_then_stream_is_whole_frames_and_garbage_is_framed():
    sink = TcpSink()
    try:
        summary = Feed(config(transport="tcp", port=sink.port, rate=20_000, count=2000, duration_s=0,
                              md_rate=2000, bad_ratio=0.3, seed=3)).run()
    finally:
        data = sink.close()
    assert whole_frames_end(data, 0, len(data)) == len(data)
    pos, kinds, malformed = 0, Counter(), 0
    while pos < len(data):
        header = read_header(data, pos)
        body = data[pos + FRAME_HEADER_SIZE:pos + FRAME_HEADER_SIZE + header.length]
        try:
            decode_body(header.msg_type, body)
            kinds[header.msg_type] += 1
        except msgspec.DecodeError:
            malformed += 1
        pos += FRAME_HEADER_SIZE + header.length
    assert malformed == summary.bad["garbage"] > 0
    assert kinds[MSG_SIGNAL] == 2000 - summary.bad["garbage"]
    assert kinds[MSG_MARKET_DATA] == summary.market_data == 200
    assert summary.bytes == len(data) and not summary.closed


def test_feed_tcp_when_peer_closes_then_feed_stops_and_says_so():
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_and_close():
        conn, _ = listener.accept()
        conn.recv(1000)  # the feed is sending
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # RST

    thread = threading.Thread(target=accept_and_close)
    thread.start()
    try:
        summary = Feed(config(transport="tcp", port=listener.getsockname()[1], rate=100_000, duration_s=5)).run()
    finally:
        thread.join()
        listener.close()
    assert summary.closed and summary.elapsed_s < 4


# ---------------------------------------------------------------------------------------------- config, CLI
def test_feed_config_when_invalid_then_error_names_the_key():
    with pytest.raises(msgspec.ValidationError, match="bad_ratio"):
        config(bad_ratio=1.5)
    with pytest.raises(msgspec.ValidationError, match="start_prices"):
        config(instruments=[0, 1, 2], start_prices=[1.0, 2.0])
    with pytest.raises(msgspec.ValidationError, match="bad_kinds"):
        config(bad_kinds=["nan", "typo"])
    with pytest.raises(msgspec.ValidationError, match="duration_s"):
        config(duration_s=0, count=0)
    with pytest.raises(msgspec.ValidationError, match="to_sim_oms"):
        config(to_sim_oms="nohost")


def test_feed_cli_when_flags_and_engine_config_then_flags_win_over_config_values():
    parser = peers.add_feed_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--config", str(MINIMAL), "--rate", "5000", "--signal-ids", "7,8",
                              "--bad-kinds", "nan,stale"])
    cfg = peers.feed_config_from_args(args)
    assert (cfg.host, cfg.port) == ("127.0.0.1", 47100)
    assert (cfg.instruments, cfg.start_prices, cfg.tick_sizes) == ((0,), (6000.0,), (0.25,))
    assert (cfg.rate, cfg.signal_ids, cfg.bad_kinds) == (5000.0, (7, 8), ("nan", "stale"))
    tcp = peers.feed_config_from_args(parser.parse_args(["--config", str(MINIMAL), "--transport", "tcp"]))
    assert tcp.port == 47101 and tcp.signal_ids == (0,)
    with pytest.raises(SystemExit, match="bad_ratio"):
        peers.feed_config_from_args(parser.parse_args(["--bad-ratio", "2"]))


def test_feed_main_when_run_then_prints_one_summary_line(capsys):
    sink = UdpSink()
    try:
        parser = peers.add_feed_arguments(argparse.ArgumentParser())
        code = peers.feed(parser.parse_args(["--port", str(sink.port), "--rate", "2000", "--count", "100",
                                                   "--duration", "0", "--bad-ratio", "0.5"]))
    finally:
        sink.close()
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(out) == 1
    assert out[0].startswith("feed: signals=") and "bad=" in out[0] and "max_lag=" in out[0]


def test_feed_records_when_prices_on_fractional_ticks_then_exact_multiples():
    f = feed_module.Feed(config(instruments=[0, 1], tick_sizes=[0.25, 5.0], start_prices=[6000.0, 20_000.0],
                                count=1, duration_s=0))
    prices = f._price(np.array([24001.0, 4001.0]), np.array([0, 1]))
    assert prices.tolist() == [6000.25, 20005.0]


def test_feed_when_value_rises_then_price_above_mid_and_when_it_falls_below():
    summary, datagrams = run_udp(rate=20_000, count=1000, duration_s=0, md_rate=1000, volatility_bps=0.0,
                                 aggression_bps=5.0, signal_ids=[1, 2], instruments=[0, 1], start_prices=[100.0])
    signals, _, _ = decode_datagrams(datagrams)
    last = {}
    for s in signals:
        previous = last.get((s.signal_id, s.instrument), 0.0)
        assert s.price == (100.05 if s.value > previous else 99.95), (s, previous)
        last[(s.signal_id, s.instrument)] = s.value


def test_feed_when_rate_zero_then_market_data_only_for_the_duration():
    summary, datagrams = run_udp(rate=0, duration_s=0.1, md_rate=2000, frames_per_datagram=10)
    signals, market, _ = decode_datagrams(datagrams)
    assert signals == [] and len(market) == summary.market_data == 200
    assert max(len(list(iter_frames(d))) for d in datagrams) <= 10  # what is due goes out, never held back


# ---------------------------------------------------------------------------------------------- the demo's feed
def test_feed_when_routes_given_then_every_signal_takes_one_of_them():
    routes = [(1, 0), (2, 3), (2, 4)]
    summary, datagrams = run_udp(rate=20_000, count=600, duration_s=0, instruments=[0, 3, 4], routes=routes)
    signals, _, _ = decode_datagrams(datagrams)
    assert len(signals) == 600
    assert {(s.signal_id, s.instrument) for s in signals} == set(routes)


def test_feed_config_when_a_route_names_an_instrument_not_sent_then_error_names_it():
    with pytest.raises(msgspec.ValidationError, match=r"routes\[1\]"):
        config(instruments=[0, 1], routes=[(1, 0), (1, 7)])


def test_feed_when_target_walk_then_each_target_starts_flat_and_moves_in_small_steps():
    summary, datagrams = run_udp(rate=20_000, count=2000, duration_s=0, signal_ids=[1, 2], instruments=[0, 1],
                                 target_drift=0.01, target_step=0.001)
    signals, _, _ = decode_datagrams(datagrams)
    by_pair = {}
    for s in signals:
        by_pair.setdefault((s.signal_id, s.instrument), []).append(s.value)
    assert len(by_pair) == 4
    for values in by_pair.values():
        steps = np.diff([0.0, *values])
        assert abs(values[0]) < 0.05 and np.abs(steps).max() < 0.05  # from flat, never a jump
        assert np.abs(values).max() > 0.5  # and it swings: ~500 steps of ~0.01 rad
        assert (np.diff(np.sign(steps)) != 0).sum() < len(steps) / 20  # one way at a time: few reversals


def test_feed_when_same_seed_and_walk_then_same_content_whatever_the_batching():
    common = dict(count=3000, duration_s=0, signal_ids=[1, 2, 3], instruments=[0, 1], target_drift=0.004,
                  target_step=0.001, bad_every=100, bad_kinds=["nan", "stale", "duplicate"])
    _, small = run_udp(rate=50_000, max_batch=7, **common)
    _, large = run_udp(rate=50_000, max_batch=4096, **common)
    assert [content(s) for s in decode_datagrams(small)[0]] == [content(s) for s in decode_datagrams(large)[0]]


def test_feed_when_bad_every_then_every_nth_signal_is_bad_taking_the_kinds_in_turn():
    summary, datagrams = run_udp(rate=20_000, count=1000, duration_s=0, bad_every=50,
                                 bad_kinds=["nan", "stale", "oversize", "duplicate"])
    assert {k: v for k, v in summary.bad.items() if v} == {"nan": 5, "stale": 5, "oversize": 5, "duplicate": 5}
    signals, _, garbage = decode_datagrams(datagrams)
    assert garbage == 5 and len(signals) == 995
    assert sum(math.isnan(s.value) for s in signals) == 5


def test_feed_udp_when_oversize_then_a_datagram_of_one_frame_longer_than_the_engine_takes():
    summary, datagrams = run_udp(rate=20_000, count=20, duration_s=0, bad_every=10, bad_kinds=["oversize"])
    oversize = [d for d in datagrams if len(d) == FRAME_HEADER_SIZE + feed_module.OVERSIZE_BODY]
    assert len(oversize) == 2 and summary.bad["oversize"] == 2
    assert read_header(oversize[0]).length == feed_module.OVERSIZE_BODY > feed_module.MAX_FRAME_BODY


def test_feed_config_when_oversize_over_tcp_then_refused_naming_the_kind():
    with pytest.raises(msgspec.ValidationError, match="oversize is for UDP and Aeron only"):
        config(transport="tcp", bad_kinds=["nan", "oversize"])


def test_feed_cli_when_demo_config_then_routes_as_the_strategies_subscribe_and_its_feed_file():
    parser = peers.add_feed_arguments(argparse.ArgumentParser())
    cfg = peers.feed_config_from_args(parser.parse_args(["--config", str(ROOT / "config" / "demo")]))
    # each signal id with the tradable instruments all its subscribers trade, one signal per (strategy, instrument)
    assert cfg.routes == ((0, 0), (1, 3), (2, 2), (2, 3), (2, 4), (3, 4), (4, 2), (5, 1), (6, 2))
    assert cfg.target_drift > 0 and cfg.bad_every > 0 and "oversize" in cfg.bad_kinds  # config/demo/feed.toml
    tcp = peers.feed_config_from_args(parser.parse_args(["--config", str(ROOT / "config" / "demo"),
                                                         "--transport", "tcp"]))
    assert "oversize" not in tcp.bad_kinds and tcp.bad_kinds
    by_hand = peers.feed_config_from_args(parser.parse_args(["--config", str(ROOT / "config" / "demo"),
                                                             "--signal-ids", "1,2"]))
    assert by_hand.routes == () and by_hand.signal_ids == (1, 2)


def closed_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("limit", [None, 10])
def test_feed_cli_when_nothing_listens_then_says_so_and_exits_1_after_max_send_errors(limit):
    port = closed_udp_port()
    command = [sys.executable, "-m", "engine.cli", "feed", "--port", str(port), "--rate", "2000", "--duration",
               "30", "--frames-per-datagram", "1", "--json"] + (["--max-send-errors", str(limit)] if limit else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert summary["gave_up"] and summary["refused"] == (limit or 100) <= summary["send_errors"]
    assert summary["signals"] < 2000 * 30  # it stopped, it did not send its whole run into the void
    assert f"feed: gave up after {limit or 100} sends refused: nothing is listening at udp 127.0.0.1:{port}" \
        in done.stderr


def test_feed_cli_when_max_send_errors_zero_then_it_keeps_sending_and_exits_0_saying_what_was_lost():
    port = closed_udp_port()
    done = subprocess.run([sys.executable, "-m", "engine.cli", "feed", "--port", str(port), "--rate", "20000",
                           "--count", "400", "--duration", "0", "--frames-per-datagram", "1", "--max-send-errors",
                           "0", "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["refused"] > 0 and not summary["gave_up"]
    assert "sends refused by udp" in done.stderr
