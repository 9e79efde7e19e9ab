"""adapters/aeron.py against real media drivers (embedded, each in its test's directory): the node and its errors,
faults (garbage, a publisher that vanishes, a slow subscriber, an OMS that goes), the engine's [aeron] config, and
the whole loop (feed -> engine -> simulated OMS -> engine) over aeron:ipc and over UDP on loopback in spin mode.
The transport contract itself runs in test_transport_contract.py (aeron-ipc, aeron-udp)."""
import os
import shutil
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import msgspec
import numpy as np
import pyaeron
import pytest

from adapters.aeron import (
    AeronClient, AeronClientConfig, AeronDriverConfig, AeronNode, AeronReceiver, AeronReceiverConfig, AeronSender,
    AeronSenderConfig, AeronStreamConfig, AeronUnavailable,
)
from adapters.base import Inbound, Outbound, TransportClosed
from engine import service
from engine.cli.peers import config_from_engine
from engine.config import ConfigError, load_config
from engine.driver import run_spin
from kernels.arena import S_TX_LEN
from kernels.dtypes import (
    ACTIVE, C_FILLS, C_FRAME_BAD_VERSION, C_FRAME_MALFORMED, C_FRAME_OVERSIZE, C_FRAME_TRUNCATED, C_ORDERS, C_REPORTS,
    C_SIGNALS, HALTED,
)
from sim.feed import Feed, FeedConfig
from sim.servers import AeronSimOms
from tests.adapters.adapter_testkit import Sink, frame, free_port, max_frame, tag

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo"


def convert(cls, **fields):
    """Configs are built by decoding, as the engine builds them from TOML: constructors do not validate."""
    return msgspec.convert(fields, cls)


def stream(stream_id, channel="aeron:ipc"):
    return {"channel": channel, "stream_id": stream_id}


def until(condition, timeout=30.0, what="condition"):  # generous: CI shares 2 cores
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


@pytest.fixture
def driver_dir(tmp_path):
    return str(tmp_path / "aeron")


@pytest.fixture
def node(driver_dir):
    """An embedded driver for the test; closed at the end whoever still uses it."""
    n = AeronNode(convert(AeronDriverConfig, directory=driver_dir))
    yield n
    n.close()


def receiver(node, *stream_ids, **fields):
    r = AeronReceiver(convert(AeronReceiverConfig, streams=[stream(i) for i in stream_ids], **fields), node)
    r.open()
    return r


def sender(node, stream_id, channel="aeron:ipc", **fields):
    s = AeronSender(convert(AeronSenderConfig, stream=stream(stream_id, channel), **fields), node)
    s.open()
    until(s.connect, what="a subscriber")
    return s


# ---------------------------------------------------------------------------------------------- the node
def test_node_when_embedded_then_the_driver_runs_in_its_directory_until_the_last_user_closes(driver_dir):
    node = AeronNode(convert(AeronDriverConfig, directory=driver_dir))
    first, second = receiver(node, 1001), receiver(node, 1002)
    assert pyaeron.is_driver_active(driver_dir, 1000) and node.users == 2

    first.close()
    assert node.driver is not None, "one user left: the driver stays"
    second.close()

    assert (node.users, node.client, node.driver) == (0, None, None)
    assert not os.path.exists(driver_dir), "the embedded driver removes its directory on shutdown"


def test_node_when_external_and_no_driver_runs_then_open_fails_at_once_naming_the_directory_and_what_to_do(
        driver_dir):
    node = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))
    r = AeronReceiver(convert(AeronReceiverConfig, streams=[stream(1001)]), node)
    started = time.monotonic()

    with pytest.raises(AeronUnavailable) as error:
        r.open()

    assert time.monotonic() - started < 1.0, "no waiting for Aeron's 10 s driver timeout"
    text = str(error.value)
    assert f"no Aeron media driver is running in {driver_dir}" in text
    assert "aeronmd" in text and 'driver = "embedded"' in text
    assert isinstance(error.value, TransportClosed) and r.closed and node.users == 0


def test_node_when_embedded_and_a_driver_already_runs_there_then_open_fails_naming_it(node, driver_dir):
    held = receiver(node, 1001)
    second = AeronNode(convert(AeronDriverConfig, directory=driver_dir))

    with pytest.raises(AeronUnavailable, match=f"already running in {driver_dir}.*external"):
        AeronReceiver(convert(AeronReceiverConfig, streams=[stream(1001)]), second).open()
    held.close()


def test_node_when_external_and_a_driver_runs_then_it_attaches_to_it(node, driver_dir):
    inbound = receiver(node, 1001)
    other_process_like = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))
    out = sender(other_process_like, 1001)

    assert out.send(frame(7))
    sink = Sink().drain_frames(inbound, 1)

    assert [tag(f) for f in sink.frames()] == [(0, 7)] and other_process_like.driver is None
    out.close()
    inbound.close()


def test_node_when_the_driver_goes_away_then_its_clients_raise_transport_closed_and_the_process_lives_on(
        node, driver_dir, caplog):
    inbound = receiver(node, 1001)  # `node` embeds the driver; `peer` is another process's view of it
    peer = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))
    peer_in, peer_out, link = receiver(peer, 1002), sender(peer, 1001), client(peer)

    inbound.close()  # the last user of `node`: its driver stops (Aeron's C client would exit the process here)
    sink = Sink()
    with pytest.raises(TransportClosed, match=f"the Aeron media driver in {driver_dir} is gone"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sink.poll(peer_in)
            time.sleep(0.001)
    with pytest.raises(TransportClosed):
        peer_out.send(frame(1))
    started = time.monotonic()
    with pytest.raises(TransportClosed, match="is gone"):
        link.connect()
    assert time.monotonic() - started < 0.5, "no 10 s wait for a driver that is gone"
    assert "MediaDriver has been shutdown" in caplog.text
    for t in (peer_in, peer_out, link):
        t.close()
    assert (peer.users, peer.client) == (0, None)


@pytest.mark.parametrize("strategy, args", [("backoff", ""), ("backoff", "10-20-1us-1ms"), ("sleeping", "100us"),
                                            ("yield", ""), ("noop", "")])
@pytest.mark.parametrize("threading_mode", ["shared", "shared_network", "dedicated"])
def test_node_when_driver_settings_given_then_the_embedded_driver_runs_with_them(driver_dir, strategy, args,
                                                                                 threading_mode):
    config = convert(AeronDriverConfig, directory=driver_dir, threading=threading_mode, idle_strategy=strategy,
                     idle_strategy_args=args)
    before = {k: v for k, v in os.environ.items() if k.startswith("AERON_")}
    node = AeronNode(config)
    inbound = receiver(node, 1001)
    out = sender(node, 1001)

    assert out.send(frame(1)) and Sink().drain_frames(inbound, 1).n_frames == 1
    assert {k: v for k, v in os.environ.items() if k.startswith("AERON_")} == before, "environment restored"
    out.close()
    inbound.close()


@pytest.mark.parametrize("fields, expected", [
    ({"idle_strategy": "backoff", "idle_strategy_args": "fast"}, r"`idle_strategy_args`: .*SPINS-YIELDS"),
    ({"idle_strategy": "sleeping", "idle_strategy_args": "1-2"}, r"`idle_strategy_args`: .*sleep period"),
    ({"idle_strategy": "yield", "idle_strategy_args": "1ms"}, r"only backoff and sleeping take args"),
    ({"idle_strategy": "yielding"}, r"\$\.idle_strategy"),
    ({"threading": "invoker"}, r"\$\.threading"),
    ({"driver": "internal"}, r"\$\.driver"),
])
def test_driver_config_when_a_value_is_wrong_then_decoding_names_the_key(fields, expected):
    with pytest.raises(msgspec.ValidationError, match=expected):
        convert(AeronDriverConfig, **fields)


# ---------------------------------------------------------------------------------------------- in
def test_receiver_when_garbage_is_sent_then_it_reaches_rx_byte_for_byte_as_chunks(node):
    inbound = receiver(node, 1001)
    out = sender(node, 1001)
    rng = np.random.default_rng(3)
    garbage = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 7, 8, 300, 5000)]

    for g in garbage:
        assert out.send(g)
    sink = Sink(check_frames=False).drain(inbound, lambda s: len(s.chunks) == len(garbage))

    assert sink.chunks == garbage
    out.close()
    inbound.close()


def test_receiver_when_rx_runs_short_mid_poll_then_the_rest_is_held_and_delivered_first_next_time(node):
    inbound = receiver(node, 1001, max_message_bytes=1200)
    out = sender(node, 1001)
    for seq in range(6):
        assert out.send(max_frame(seq))  # ~1 kB each: rx of 2.5 kB takes two per poll
    sink = Sink(rx_bytes=2500, slots=16)

    until(lambda: sink.poll(inbound) > 0, what="the first messages")
    assert len(sink.chunks) == 2 and len(inbound._held) == 4, "the poll read on: what did not fit waits aside"
    sink.drain_frames(inbound, 6)

    assert [tag(f) for f in sink.frames()] == [(0, seq) for seq in range(6)]
    out.close()
    inbound.close()


def test_receiver_when_a_message_is_larger_than_rx_then_it_is_counted_oversize_and_the_next_still_comes(node):
    inbound = receiver(node, 1001, max_message_bytes=1024)
    out = sender(node, 1001)
    huge = b"".join(frame(seq, body_len=1000) for seq in range(5))

    assert out.send(huge) and out.send(frame(99))
    sink = Sink(rx_bytes=2048).drain_frames(inbound, 1)

    assert [tag(f) for f in sink.frames()] == [(0, 99)] and inbound.stats.oversize == 1
    out.close()
    inbound.close()


def test_receiver_when_a_publisher_vanishes_then_counted_and_a_new_one_is_heard(node, driver_dir):
    inbound = receiver(node, 1001)
    peer = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))  # another client
    first = sender(peer, 1001)
    assert first.send(frame(1))
    until(lambda: inbound.stats.connections == 1, what="the publisher's image")

    first.close()  # the client goes too: its last user left
    sink = Sink()  # what it sent before it went is still delivered; its image goes once read to the end
    sink.drain(inbound, lambda s: inbound.stats.disconnects == 1, timeout=10)
    second = sender(AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir)), 1001)
    assert second.send(frame(2))
    sink.drain_frames(inbound, 2)

    assert [tag(f) for f in sink.frames()] == [(0, 1), (0, 2)]
    assert inbound.stats.connections == 2
    second.close()
    inbound.close()


def test_receiver_when_several_streams_then_each_is_polled_and_chunks_keep_their_stream_order(node):
    inbound = receiver(node, 1002, 1001)
    market, signals = sender(node, 1002), sender(node, 1001)
    for seq in range(5):
        assert market.send(frame(seq, source=2)) and signals.send(frame(seq, source=1))
    sink = Sink().drain_frames(inbound, 10)

    tags = [tag(f) for f in sink.frames()]
    assert [t for t in tags if t[0] == 1] == [(1, s) for s in range(5)]
    assert [t for t in tags if t[0] == 2] == [(2, s) for s in range(5)]
    market.close()
    signals.close()
    inbound.close()


def test_receiver_when_polled_in_steady_state_then_nothing_it_allocates_outlives_the_poll(node):
    inbound = receiver(node, 1001)
    out = sender(node, 1001)
    sink = Sink()
    one = frame(1)

    def rounds(n):
        for _ in range(n):
            out.send(one)
            inbound.poll(sink.rx, 0, sink.rx_sizes, 0, 64)

    rounds(2000)  # warm up: caches, the view of rx
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        rounds(20_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                if "aeron" in stat.traceback[0].filename)
    # a few ints (offsets, counters) change size; anything kept per message would be >= 20k x 16 bytes
    assert grown < 1024, f"{grown} bytes kept by adapters/aeron.py over 20k messages"
    assert inbound.stats.chunks == 22_000
    out.close()
    inbound.close()


# ---------------------------------------------------------------------------------------------- out
def test_sender_when_no_subscriber_then_send_raises_transport_closed_naming_the_stream(node):
    lonely = AeronSender(convert(AeronSenderConfig, stream=stream(1009)), node)
    lonely.open()

    assert not lonely.connect()
    with pytest.raises(TransportClosed, match="no subscriber on aeron:ipc stream 1009"):
        lonely.send(frame(1))
    lonely.close()


def test_sender_when_a_send_is_longer_than_a_message_then_it_goes_cut_at_frame_boundaries(node):
    inbound = receiver(node, 1001, max_message_bytes=4096)
    out = sender(node, 1001, max_message_bytes=4096)
    run = b"".join(frame(seq) for seq in range(400))  # ~ 24 kB

    assert out.send(run)
    sink = Sink().drain_frames(inbound, 400)

    assert b"".join(sink.chunks) == run and len(sink.chunks) > 1
    assert all(len(c) <= 4096 for c in sink.chunks)  # Sink also checked: every chunk is whole frames
    assert (out.stats.sent, out.stats.bytes_out) == (1, len(run))
    out.close()
    inbound.close()


def test_sender_when_the_window_fills_mid_send_then_the_tail_is_held_and_flush_sends_it(node):
    channel = "aeron:ipc?term-length=64k"  # a 32 kB publication window
    inbound = AeronReceiver(convert(AeronReceiverConfig, streams=[stream(1001, channel)]), node)
    inbound.open()
    out = sender(node, 1001, channel, max_message_bytes=8192, offer_attempts=4)
    run = b"".join(max_frame(seq) for seq in range(60))  # ~ 62 kB: more than the window

    assert out.send(run), "the first messages went: the send is taken"
    assert out.pending_bytes > 0 and not out.send(frame(0)), "the held tail goes first"
    sink = Sink()
    until(lambda: sink.poll(inbound) >= 0 and out.flush(), what="the tail to go")
    sink.drain_frames(inbound, 60)

    assert b"".join(sink.chunks) == run and out.stats.backpressure >= 1
    out.close()
    inbound.close()


# ---------------------------------------------------------------------------------------------- the OMS link
def client(node, orders=1003, reports=1004, **fields):
    c = AeronClient(convert(AeronClientConfig, orders=stream(orders), reports=stream(reports), **fields), node)
    c.open()
    return c


class FakeOms:
    """The OMS side of the link, in another client: orders in, reports out."""

    def __init__(self, driver_dir, orders=1003, reports=1004, channel="aeron:ipc"):
        peer = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))
        self.orders = AeronReceiver(convert(AeronReceiverConfig, streams=[stream(orders, channel)]), peer)
        self.orders.open()
        self.reports = AeronSender(convert(AeronSenderConfig, stream=stream(reports)), peer)
        self.reports.open()

    def close(self):
        self.orders.close()
        self.reports.close()


def test_client_meets_both_protocols_and_is_not_connected_until_the_oms_subscribes(node, driver_dir):
    link = client(node)
    assert isinstance(link, Inbound) and isinstance(link, Outbound) and link.fileno() == -1
    assert not link.connect()
    with pytest.raises(TransportClosed, match="connect"):
        link.send(frame(1))

    oms = FakeOms(driver_dir)
    until(link.connect, what="the OMS")
    assert link.connected and link.stats.connections == 1
    oms.close()
    link.close()


def test_client_when_orders_go_and_reports_come_back_then_both_arrive_whole(node, driver_dir):
    link, oms = client(node), FakeOms(driver_dir)
    until(link.connect, what="the OMS")
    until(lambda: oms.reports.connect(), what="the engine's reports subscription")

    assert link.send(frame(1) + frame(2))
    orders = Sink().drain_frames(oms.orders, 2)
    assert oms.reports.send(frame(10, source=9))
    reports = Sink().drain_frames(link, 1)

    assert [tag(f) for f in orders.frames()] == [(0, 1), (0, 2)]
    assert [tag(f) for f in reports.frames()] == [(9, 10)]
    oms.close()
    link.close()


def test_client_when_the_oms_vanishes_then_transport_closed_once_and_connect_restores_the_link(node, driver_dir):
    link, oms = client(node), FakeOms(driver_dir)
    until(link.connect, what="the OMS")
    until(lambda: oms.reports.connect(), what="the engine's reports subscription")
    assert oms.reports.send(frame(5))
    sink = Sink()

    oms.close()  # its orders subscription and reports publication go: the OMS process is gone
    errors = []

    def seen_gone():  # what the engine does: poll, and send while connected
        try:
            sink.poll(link)
            if link.connected:
                link.send(frame(1))
        except TransportClosed as e:
            errors.append(str(e))
        return not link.connected
    until(seen_gone, what="the OMS to be seen gone")
    assert len(errors) == 1 and ("OMS is gone" in errors[0] or "no subscriber" in errors[0]), errors
    assert link.stats.disconnects == 1
    sink.poll(link)  # once told, polls go on quietly: the engine reconnects on its own schedule
    sink.drain_frames(link, 1)  # the report it sent before it went still arrives
    assert [tag(f) for f in sink.frames()] == [(0, 5)]
    assert not link.connect()

    back = FakeOms(driver_dir)
    until(link.connect, what="the OMS to come back")
    assert link.send(frame(2)) and link.stats.connections == 2
    assert [tag(f) for f in Sink().drain_frames(back.orders, 1).frames()] == [(0, 2)]
    back.close()
    link.close()


# ---------------------------------------------------------------------------------------------- the engine
def engine_dir(tmp_path, engine_toml):
    root = tmp_path / "config"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("engine*.toml"))
    (root / "engine.toml").write_text(engine_toml)
    return root


def aeron_engine_toml(driver_dir, *, oms="aeron", driver="spin", medium="ipc", extra=""):
    streams = ""
    if medium == "udp":
        ports = [free_port() for _ in range(3)]
        streams = "\n".join([
            f'signals = {{ channel = "aeron:udp?endpoint=127.0.0.1:{ports[0]}", stream_id = 1001 }}',
            f'market_data = {{ channel = "aeron:udp?endpoint=127.0.0.1:{ports[0]}", stream_id = 1002 }}',
            f'orders = {{ channel = "aeron:udp?endpoint=127.0.0.1:{ports[1]}", stream_id = 1003 }}',
            f'reports = {{ channel = "aeron:udp?endpoint=127.0.0.1:{ports[2]}", stream_id = 1004 }}'])
    return (f'name = "aeron-test"\ndriver = "{driver}"\nsources = 2\n[listen]\naeron = true\n[oms]\nkind = "{oms}"\n'
            f'reconnect_backoff_min_ms = 20\n[aeron]\ndirectory = "{driver_dir}"\n{streams}\n{extra}')


def test_engine_config_when_aeron_table_given_then_listen_oms_and_streams_follow_it(tmp_path, driver_dir):
    config = load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir, medium="udp", extra='threading = '
                                                                '"dedicated"\nidle_strategy = "sleeping"\n'
                                                                'idle_strategy_args = "1ms"\n')))
    engine = config.engine

    assert engine.listen.aeron and (engine.listen.udp, engine.listen.tcp) == (None, None)
    assert engine.oms.kind == "aeron"
    assert (engine.aeron.driver, engine.aeron.threading, engine.aeron.idle_strategy) == ("embedded", "dedicated",
                                                                                           "sleeping")
    assert engine.aeron.signals.channel.startswith("aeron:udp?endpoint=127.0.0.1:")
    assert isinstance(engine.aeron, AeronDriverConfig), "the [aeron] table is the node's config as it stands"
    assert load_config(DEMO).engine.aeron.orders == msgspec.convert(stream(1003), AeronStreamConfig)


@pytest.mark.parametrize("extra, expected", [
    ('signals = { channel = "udp://127.0.0.1:5", stream_id = 1 }',
     r"at \$\.aeron\.signals\.channel: Expected an Aeron channel like \"aeron:ipc\""),
    ('orders = { stream_id = 0 }', r"at \$\.aeron\.orders\.stream_id: Expected int >= 1, got 0"),
    ('idle_strategy_args = "7"', r"at \$\.aeron\.idle_strategy_args: Expected \"SPINS-YIELDS"),
    ('threads = "shared"', r"at \$\.aeron\.threads: unknown key; .*did you mean \"threading\""),
])
def test_engine_config_when_an_aeron_key_is_wrong_then_the_error_names_file_and_key(tmp_path, driver_dir, extra,
                                                                                  expected):
    root = engine_dir(tmp_path, aeron_engine_toml(driver_dir, extra=extra))
    with pytest.raises(ConfigError, match=expected):
        load_config(root)


def test_service_when_external_driver_is_not_running_then_build_fails_naming_the_directory(tmp_path, driver_dir):
    config = load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir, oms="sim", extra='driver = "external"')))
    with pytest.raises(AeronUnavailable, match=f"no Aeron media driver is running in {driver_dir}"):
        service.build(config)


def test_engine_when_garbage_and_signals_arrive_over_aeron_then_its_decoder_counts_the_garbage(tmp_path,
                                                                                             driver_dir):
    svc = service.build(load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir, oms="sim"))))
    fields = config_from_engine(tmp_path / "config")  # garbage: random bytes, each an Aeron message of its own
    fields.update(rate=20_000, count=2000, duration_s=0, md_rate=2000, bad_ratio=0.2, bad_kinds=["garbage"],
                  seed=5)
    counters = svc.engine.state.counters

    def drained():
        if svc.engine.poll():
            svc.engine.step()
        return svc.engine.inbound[0].stats.chunks == summary.sends
    try:
        summary = Feed(msgspec.convert(fields, FeedConfig)).run()
        until(drained, what="every message")
    finally:
        svc.close()
    garbage = summary.bad["garbage"]
    assert garbage > 100 and counters[C_SIGNALS] == summary.signals
    bad_frames = sum(int(counters[c]) for c in (C_FRAME_BAD_VERSION, C_FRAME_TRUNCATED, C_FRAME_OVERSIZE,
                                                C_FRAME_MALFORMED))
    assert bad_frames == garbage, "each garbage message is counted once by the decoder, none is fatal"


def start_oms_when_the_driver_is_up(driver_dir, aeron, holder, run=None):
    """The simulated OMS in a thread of its own client, attaching once the engine's build started the driver."""
    def main():
        until(lambda: pyaeron.is_driver_active(driver_dir, 1000), what="the engine's driver")
        node = AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir))
        holder["oms"] = AeronSimOms(node, aeron.orders, aeron.reports, aeron.market_data).open()
        if run is not None:
            try:
                holder["oms"].run(run, pyaeron.IdleStrategy.sleeping(50_000))
            finally:
                holder["oms"].close()
    thread = threading.Thread(target=main)
    thread.start()
    return thread


def test_engine_when_the_oms_is_slow_then_back_pressure_is_counted_and_held_orders_go_once_it_reads(
        tmp_path, driver_dir):
    extra = 'orders = { channel = "aeron:ipc?term-length=64k", stream_id = 1003 }\noffer_attempts = 2'
    config = load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir, extra=extra)))
    holder = {}
    thread = start_oms_when_the_driver_is_up(driver_dir, config.engine.aeron, holder)  # it reads nothing yet
    svc = service.build(config, connect_timeout_s=5)
    thread.join(5)
    engine, oms = svc.engine, holder["oms"]
    state, batch = engine.state, np.frombuffer(b"".join(max_frame(seq) for seq in range(8)), np.uint8)  # 8 kB

    def encode_and_step():  # stands in for a batch that encoded 8 kB of orders
        if state.scalars[S_TX_LEN] == 0:
            state.tx[:len(batch)] = batch
            state.scalars[S_TX_LEN] = len(batch)
        engine.step()
    try:
        assert engine.oms_up
        for _ in range(10):  # the 32 kB publication window is full after 4
            encode_and_step()
        assert engine.stats.oms_backpressure > 0 and engine.oms.stats.backpressure == engine.stats.oms_backpressure
        assert state.scalars[S_TX_LEN] == len(batch), "the refused frames wait in tx"
        assert engine.oms_up and engine.stats.oms_disconnects == 0, "back-pressure is not a lost OMS"

        until(lambda: oms.work() >= 0 and engine.step() >= 0 and state.scalars[S_TX_LEN] == 0, what="room again")
        assert engine.oms.stats.sent == engine.stats.oms_sends >= 5
    finally:
        oms.close()  # clients of the engine's driver go before it
        svc.close()


def test_engine_when_the_oms_goes_then_its_policy_applies_and_it_reconnects_when_the_oms_returns(tmp_path,
                                                                                               driver_dir):
    config = load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir)))
    aeron = config.engine.aeron
    svc = service.build(config, connect_timeout_s=0.05)  # no OMS yet: the policy applies at start
    oms = None
    engine = svc.engine
    try:
        assert not engine.oms_up and engine.stats.oms_disconnects == 1
        assert all(s["state"] != ACTIVE for s in engine.state.strategies)
        assert any(s["state"] == HALTED for s in engine.state.strategies)

        oms = AeronSimOms(AeronNode(convert(AeronDriverConfig, driver="external", directory=driver_dir)),
                          aeron.orders, aeron.reports, aeron.market_data).open()
        until(lambda: engine.maintain(time.time_ns() + 10**12) is None and engine.oms_up, what="the reconnect")
        assert engine.oms.stats.connections == 1

        oms.close()
        until(lambda: engine.poll() >= 0 and not engine.oms_up, what="the OMS to be seen gone")
        assert engine.stats.oms_disconnects == 2 and engine.oms.stats.disconnects == 1
    finally:
        if oms is not None:
            oms.close()
        svc.close()


def run_loop_over_aeron(tmp_path, driver_dir, medium):
    """The whole loop in spin mode: feed (Aeron publications) -> engine (embedded driver, Aeron receiver and
    client) -> simulated OMS over Aeron (its own client, in a thread) -> reports -> engine. Returns once the
    loop has settled: every order reached the OMS and every report the OMS made reached the engine.

    Limit orders that the market never crossed still rest at the OMS when the feed (and with it the market
    data) stops: they have their ACK and nothing more, and stay working in the engine's books. So the loop is
    checked by what each side holds, not by "two reports an order" (which a resting order never gets)."""
    config = load_config(engine_dir(tmp_path, aeron_engine_toml(driver_dir, medium=medium)))
    stop_oms, stop_engine, holder = threading.Event(), threading.Event(), {}
    oms_thread = start_oms_when_the_driver_is_up(driver_dir, config.engine.aeron, holder, run=stop_oms)
    svc = service.build(config, connect_timeout_s=5)
    engine_thread = threading.Thread(target=run_spin, args=(svc.engine, stop_engine))
    counters = svc.engine.state.counters
    try:
        assert svc.engine.oms_up
        engine_thread.start()
        fields = config_from_engine(tmp_path / "config")
        assert fields["transport"] == "aeron", "an engine that listens on Aeron only gets an Aeron feed"
        fields.update(rate=4000, duration_s=0.5, md_rate=2000, bad_ratio=0.02, seed=11)
        summary = Feed(msgspec.convert(fields, FeedConfig)).run()
        until(lambda: counters[C_SIGNALS] + summary.bad["duplicate"] >= summary.signals, what="the signals")
        made = holder["oms"].oms.stats  # counted when the OMS schedules a report: monotone, read across threads

        def settled():  # nothing in flight either way; both counts only grow, so once true it stays true
            return (made.orders == counters[C_ORDERS] and
                    counters[C_REPORTS] == made.acks + made.rejects + made.partial_fills + made.fills + made.canceled)
        until(settled, what="every order at the OMS and every report it made back at the engine")
    finally:
        stop_engine.set()
        if engine_thread.ident is not None:
            engine_thread.join(10)
        stop_oms.set()
        oms_thread.join(10)
        svc.close()
    return summary, counters, holder["oms"], svc.engine


def check_loop_over_aeron(summary, counters, oms, engine):
    assert summary.signals > 1500 and not summary.closed
    assert counters[C_ORDERS] > 0 and oms.oms.stats.orders == counters[C_ORDERS]
    assert counters[C_FILLS] > 0 and oms.oms.stats.market_data > 0, "the OMS hears the market data stream too"
    assert oms.counts["reports"] == counters[C_REPORTS] and oms.counts["reports_lost"] == 0
    working = int(engine.state.strategies["open_orders"].sum())
    assert working == oms.oms.resting(), "the orders still working in the engine are the ones resting at the OMS"
    assert engine.stats.oms_backpressure == 0 and engine.stats.oms_disconnects == 0


@pytest.mark.parametrize("medium", ["ipc", "udp"])
def test_loop_over_aeron_when_the_feed_runs_then_orders_reach_the_oms_and_fills_come_back(tmp_path, driver_dir,
                                                                                         medium):
    check_loop_over_aeron(*run_loop_over_aeron(tmp_path, driver_dir, medium))


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(1, 21))
@pytest.mark.parametrize("medium", ["ipc", "udp"])
def test_loop_over_aeron_soak_when_run_20_times_in_a_row_then_every_run_settles(tmp_path, driver_dir, medium,
                                                                               round_):
    """The loop above, 20 runs in a row per medium, each with its own driver directory and engine
    (`make soak-aeron`; about 1.5 s a run here)."""
    check_loop_over_aeron(*run_loop_over_aeron(tmp_path, driver_dir, medium))


def test_sim_oms_process_when_aeron_then_it_serves_the_engine_streams_and_prints_a_summary_on_sigterm(
        tmp_path, driver_dir, node):
    root = engine_dir(tmp_path, aeron_engine_toml(driver_dir))
    held = receiver(node, 1999)  # the engine's driver, as the OMS would find it
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sim-oms", "--aeron", str(root)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("sim-oms listening on aeron aeron:ipc stream 1003"), ready
        link = client(node)
        until(link.connect, what="the OMS process")
        link.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        held.close()
    assert proc.returncode == 0 and out.startswith("sim-oms: orders=0")
