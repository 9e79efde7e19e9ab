"""Nobody but the OMS link moves a position: the real engine over loopback, sent frames off their transport's role.
A FILL or a CANCELED sent to a signal listener (UDP, TCP) changes nothing and is counted for that listener; a
Signal sent on the OMS connection places no order and is counted for the link."""
import socket

import pytest

from kernels.dtypes import EXEC_CANCELED, EXEC_FILL
from tests.e2e.e2e_kit import ESZ5, derive_config, market_data_frame, signal_frame
from tests.e2e.test_oms_faults import tcp_oms_config
from wire.frames import encode_frame
from wire.schema import ExecutionReport

FIRST_ORDER = 1 << 24  # generation 1, slot 0: the id an attacker would guess first


def report(exec_type, order_id=FIRST_ORDER, qty=5, price=1.0):
    return encode_frame(ExecutionReport(order_id=order_id, strategy=0, deploy=1, exec_type=exec_type, qty=qty,
                                        price=price, leaves=0, fee=0.0, ts_ns=0, reason=0))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_roles_when_a_fill_and_a_cancel_come_to_a_signal_listener_then_nothing_moves(procs, tmp_path, transport):
    config = derive_config(tmp_path / "config", keep=["momentum"])
    engine = procs.engine(config)
    client = procs.udp(engine) if transport == "udp" else procs.tcp(engine)
    client.send(market_data_frame(ESZ5, bid=5999.0, ask=6001.0, last=6000.0))
    client.send(signal_frame(1, value=2.0, price=5998.0))  # momentum's buy rests: a working order to forge against
    engine.wait_status(lambda r: r["strategies"]["momentum"]["open_orders"] == 1, "a working order")

    client.send(report(EXEC_FILL) + report(EXEC_CANCELED))
    status = engine.wait_status(lambda r: r["counters"]["role_report_off_oms"] == 2, "the forged reports counted")
    report_ = engine.report()

    momentum = report_["strategies"]["momentum"]
    assert momentum["positions"]["ESZ5"]["qty"] == 0 and momentum["open_orders"] == 1 and momentum["fills"] == 0
    assert report_["transports"][transport]["reports_dropped_by_role"] == 2
    assert status["counters"]["fills"] == 0 and status["counters"]["reports"] == 0


def test_roles_when_the_oms_link_sends_a_signal_then_no_order_and_it_is_counted_for_the_link(procs, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        engine = procs.engine(tcp_oms_config(tmp_path, listener.getsockname()[1]))
        oms, _ = listener.accept()
        with oms:
            oms.sendall(market_data_frame(ESZ5) + signal_frame(1, value=1.0, price=6000.0))
            status = engine.wait_status(lambda r: r["counters"]["role_data_on_oms"] == 2, "the frames counted")
            assert status["counters"]["orders"] == status["counters"]["signals"] == 0
            assert status["oms"]["transport"]["data_dropped_by_role"] == 2


def test_allow_list_when_a_peer_is_not_listed_then_its_datagrams_and_connections_are_dropped(procs, tmp_path):
    """Both listeners allow 127.0.0.2 only: the same signals from 127.0.0.1 are counted and change nothing, from
    127.0.0.2 they trade."""
    allow = {"host": "127.0.0.1", "port": 0, "allow": ["127.0.0.2"]}
    engine = procs.engine(derive_config(tmp_path / "config", keep=["momentum"],
                                        engine={"listen": {"udp": allow, "tcp": allow}}))
    udp_host, udp_port = engine.address("udp")
    tcp_host, tcp_port = engine.address("tcp")

    def udp_from(source_ip, *frames):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source_ip, 0))
            sock.sendto(b"".join(frames), (udp_host, udp_port))

    def tcp_from(source_ip, *frames):
        sock = socket.create_connection((tcp_host, tcp_port), timeout=5, source_address=(source_ip, 0))
        with sock:
            sock.sendall(b"".join(frames))
            try:
                return sock.recv(1) == b""  # the engine closed its end
            except ConnectionResetError:
                return True  # closed with our bytes unread: the kernel answers with a reset

    udp_from("127.0.0.1", market_data_frame(ESZ5), signal_frame(1, price=6000.25))
    assert tcp_from("127.0.0.1", signal_frame(2, price=6000.25))  # closed unread
    status = engine.wait_status(lambda r: r["transports"]["udp"]["not_allowed"] == 1 and
                                r["transports"]["tcp"]["not_allowed"] == 1, "both refusals counted")
    assert status["counters"]["frames"] == 0 and status["counters"]["orders"] == 0

    udp_from("127.0.0.2", market_data_frame(ESZ5), signal_frame(1, price=6000.25))
    engine.wait_status(lambda r: r["counters"]["orders"] == 1, "the allowed peer's order")
    report = engine.report()
    assert report["transports"]["udp"]["not_allowed"] == 1 and report["transports"]["tcp"]["not_allowed"] == 1
    assert report["transports"]["tcp"]["connections"] == 0  # refused before it was one
    assert report["counters"]["signals"] == 1 and report["counters"]["market_data"] == 1
