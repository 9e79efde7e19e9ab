"""The watched OMS link, against the real engine process: a peer that accepts the TCP connection and then never
reads and never answers. The engine must not believe the link is up for long: orders left unacknowledged past
`ack_timeout_ms`, or sends refused for `stall_ms`, and the link is given up (the on_disconnect policy applies, the
report and the log say why); what it never took is canceled in the books, at the end of a run too, and the report
gives the fate of every order.
"""
import socket
import threading
import time
from collections import Counter

import pytest

from tests.e2e.e2e_kit import assert_books_balance, derive_config, market_data_frame, reasons
from kernels.dtypes import MSG_ORDER, ORDER_SLOT_BITS
from tests.e2e.test_bad_input import Source
from wire.frames import iter_frames

SLOT_MASK = (1 << ORDER_SLOT_BITS) - 1
ROOMY = {"sizing": {"max_position": 10**6},
         "limits": {"max_order_qty": 5, "max_open_orders": 1 << 16, "rate_per_second": 1e9, "burst": 1e9,
                    "max_order_notional": 1e9, "daily_loss_limit": 1e12},
         "breakers": {"max_consecutive_rejects": 10**6, "ratio_min_orders": 10**6, "max_drawdown": 1e12,
                      "loss_limit": 1e12}}
ACCOUNTS = {"futures": {"max_gross_notional": 1e14, "max_net_notional": 1e14, "daily_loss_limit": 1e12}}


class Deaf:
    """A TCP peer that accepts every connection and never reads from it (its receive buffer as small as the
    kernel allows, so a sender's data backs up quickly)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # accepted sockets inherit it
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = []
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _take(self):
        """The next connection, kept to be closed with the peer; None once the peer is closed."""
        try:
            conn = self.sock.accept()[0]
        except OSError:
            return None
        with self.lock:
            if self.closed:
                conn.close()
                return None
            self.connections.append(conn)
        return conn

    def _accept(self):
        while self._take() is not None:
            pass

    def close(self):
        with self.lock:
            self.closed = True
            for conn in self.connections:
                conn.close()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (closing alone does not)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def deaf():
    peer = Deaf()
    yield peer
    peer.close()


def watched_config(tmp_path, port, name="config", journal=None, **watch):
    oms = {"kind": "tcp", "tcp": {"host": "127.0.0.1", "port": port, "sndbuf_bytes": 4096},
           "reconnect_backoff_min_ms": 50, "reconnect_backoff_max_ms": 200, **watch}
    return derive_config(tmp_path / name, engine={"oms": oms, **({"journal": journal} if journal else {})},
                         keep={"momentum"}, strategies={"momentum": ROOMY}, accounts=ACCOUNTS)


def assert_every_order_has_a_fate(report):
    fates = report["oms"]["orders"]
    assert fates["placed"] == report["counters"]["orders"]
    assert fates["placed"] == sum(fates[k] for k in ("filled", "canceled", "rejected", "working", "unacknowledged"))
    assert fates["unsent"] == report["oms"]["orders_unsent"] <= fates["canceled"]


def test_oms_when_orders_go_unacknowledged_then_link_given_up_and_strategies_halted(procs, tmp_path, deaf):
    engine = procs.engine(watched_config(tmp_path, deaf.port, ack_timeout_ms=300, max_unacked=2, stall_ms=60_000))
    udp, s = procs.udp(engine), Source(0, Counter())
    udp.send(market_data_frame(), s.good(5))
    engine.wait_status(lambda r: r["counters"]["orders"] == 5, "5 orders")
    started = time.monotonic()
    status = engine.wait_status(lambda r: r["oms"]["oms_given_up"] == 1, "the link given up", timeout=10)
    assert time.monotonic() - started < 5  # 300 ms and a few scans, on a loaded machine
    assert "5 orders unacknowledged after 300 ms" in status["oms"]["watch"]["down_reason"]
    engine.wait_status(lambda r: r["oms"]["up"], "the link back up (the peer still accepts)")
    udp.send(s.good(3))  # halted by the policy: refused, nothing sent
    engine.wait_status(lambda r: r["counters"]["rejects"] == 3, "3 rejects")
    report = engine.report()
    link = report["oms"]
    assert link["oms_given_up"] == 1 and link["oms_disconnects"] == 1 and link["transport"]["connections"] == 2
    assert report["strategies"]["momentum"]["state"] == "HALTED" and reasons(report) == {"not_active": 3}
    # nothing answered them: the 5 orders are in doubt at the OMS, not filled, not canceled
    assert link["orders"] == {"placed": 5, "filled": 0, "canceled": 0, "rejected": 0, "working": 0,
                              "unacknowledged": 5, "unsent": 0}
    assert report["strategies"]["momentum"]["positions"] == {} or all(
        p["qty"] == 0 for p in report["strategies"]["momentum"]["positions"].values())
    assert "OMS link given up: 5 orders unacknowledged" in engine.stderr
    assert_every_order_has_a_fate(report)
    assert_books_balance(report)


def bursts(engine, tcp, source, n=10, size=200):
    """n bursts of `size` signals, the first decided before the rest go: so they make two batches or more whatever
    the driver (one that decides all at once would make one send, which the link takes and holds: no refusal)."""
    tcp.send(source.good(size))
    engine.wait_status(lambda r: r["counters"]["signals"] >= size, "the first burst decided")
    for _ in range(n - 1):
        tcp.send(source.good(size))


def test_oms_when_it_takes_nothing_then_link_given_up_and_unsent_orders_canceled(procs, tmp_path, deaf):
    engine = procs.engine(watched_config(tmp_path, deaf.port, ack_timeout_ms=60_000, stall_ms=300))
    tcp, s = procs.tcp(engine), Source(0, Counter())
    tcp.send(market_data_frame())
    bursts(engine, tcp, s)  # far more than the two small socket buffers hold: sends are refused, tx fills
    status = engine.wait_status(lambda r: r["oms"]["oms_given_up"] == 1, "the link given up", timeout=20)
    assert "it has taken no orders for" in status["oms"]["watch"]["down_reason"]
    report = engine.report()
    link = report["oms"]
    # refused in tx, or taken and held by the link when it was dropped: either way never sent, and canceled
    assert link["oms_backpressure"] > 0 or link["transport"]["held_discarded"] == 1
    assert link["orders_unsent"] > 0 and link["orders_pending"] == 0
    assert report["counters"]["orders"] == 2000 and report["strategies"]["momentum"]["state"] == "HALTED"
    assert link["orders"]["canceled"] == link["orders_unsent"]
    assert_every_order_has_a_fate(report)
    assert_books_balance(report)


def test_oms_when_run_ends_with_orders_not_taken_then_they_are_canceled_not_left(procs, tmp_path, deaf):
    engine = procs.engine(watched_config(tmp_path, deaf.port, ack_timeout_ms=60_000, stall_ms=60_000))
    tcp, s = procs.tcp(engine), Source(0, Counter())
    tcp.send(market_data_frame())
    bursts(engine, tcp, s)
    engine.wait_status(lambda r: r["counters"]["orders"] == 2000 and r["oms"]["orders_pending"] > 0,
                       "orders waiting in tx")
    report = engine.report()
    link = report["oms"]
    assert link["up"] and link["oms_given_up"] == 0
    assert link["orders_pending"] == 0 and link["orders_unsent"] > 0  # canceled at the end, not left behind
    assert link["orders"]["canceled"] == link["orders_unsent"]
    assert_every_order_has_a_fate(report)
    assert_books_balance(report)


class Recorder(Deaf):
    """An OMS peer that reads the order frames it is sent (and answers none): the ids the engine used."""

    data = b""

    def _accept(self):
        while (conn := self._take()) is not None:
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            while chunk := conn.recv(65536):
                self.data += chunk
        except OSError:  # closed under us at the end of the test
            pass

    def order_ids(self):
        return [order.order_id for msg_type, order in iter_frames(self.data) if msg_type == MSG_ORDER]


def test_order_ids_when_engine_restarts_fresh_or_without_journal_then_never_reused(procs, tmp_path):
    """Four runs against one OMS: the first, one started --fresh --force over its journal, one with the journal
    off, one recovering the journal: 3 orders each, 12 different ids."""
    oms = Recorder()
    try:
        config = watched_config(tmp_path, oms.port)
        # the same data directory (the order-ids file lives beside the journal directory), the journal off
        no_journal = watched_config(tmp_path, oms.port, "no-journal",
                                    journal={"enabled": False, "dir": str(config / "var" / "journal")})
        runs = [(config, ()), (config, ("--fresh", "--force")), (no_journal, ()), (config, ())]
        seen = 0
        for k, (where, extra) in enumerate(runs):
            engine = procs.engine(where, *extra, name=f"engine-{k}")
            before = engine.wait_status(lambda r: True, "a status")["counters"]["orders"]  # recovered: run 1's
            udp, s = procs.udp(engine), Source(0, Counter())
            s.seq = 10 * k  # a recovered engine remembers the source's last seq
            udp.send(market_data_frame(), s.good(3))
            engine.wait_status(lambda r: r["counters"]["orders"] == before + 3, "3 orders")
            seen += 3
            deadline = time.monotonic() + 10
            while len(oms.order_ids()) < seen and time.monotonic() < deadline:
                time.sleep(0.01)
            engine.report()
        ids = oms.order_ids()
        assert len(ids) == 12 and len(set(ids)) == 12, str([(i >> ORDER_SLOT_BITS, i & SLOT_MASK) for i in ids])
        assert (config / "var" / "order-ids").exists()
    finally:
        oms.close()
