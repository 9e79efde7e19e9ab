"""UDP faults: garbage, oversize and empty datagrams, a flood faster than the polls, a refused send."""
import os
import socket
import time

import msgspec
import pytest

from adapters.udp import UdpReceiver, UdpReceiverConfig, UdpSender, UdpSenderConfig
from tests.adapters.adapter_testkit import Sink, frame, free_port, tag


@pytest.fixture
def receiver():
    r = UdpReceiver(msgspec.convert({"max_datagram_bytes": 2048, "rcvbuf_bytes": 1 << 16}, UdpReceiverConfig))
    r.open()
    yield r
    r.close()


@pytest.fixture
def sender(receiver):
    s = UdpSender(msgspec.convert({"port": receiver.address[1]}, UdpSenderConfig))
    s.open()
    yield s
    s.close()


def test_udp_when_a_datagram_is_garbage_then_it_is_delivered_as_it_came(receiver, sender):
    garbage = os.urandom(300)
    assert sender.send(garbage) and sender.send(frame(1))
    sink = Sink(check_frames=False).drain(receiver, lambda s: len(s.chunks) == 2)
    assert sink.chunks == [garbage, frame(1)]  # decoding, not the transport, counts the garbage


def test_udp_when_a_datagram_is_larger_than_max_datagram_bytes_then_it_is_counted_and_dropped_whole(receiver, sender):
    assert sender.send(bytes(3000)) and sender.send(b"") and sender.send(frame(2))
    sink = Sink().drain(receiver, lambda s: len(s.chunks) == 1)
    assert sink.chunks == [frame(2)]
    assert (receiver.stats.oversize, receiver.stats.empty, receiver.stats.chunks) == (1, 1, 1)


def test_udp_when_the_flood_outruns_the_polls_then_what_arrives_is_whole_in_order_and_counted(receiver, sender):
    n_sent = 20_000
    sink = Sink(rx_bytes=1 << 16)
    for seq in range(n_sent):
        sender.send(frame(seq))
        if seq % 1000 == 0:
            sink.poll(receiver, max_chunks=16)  # far slower than the sender: the 128 kB kernel buffer overflows
    idle_until = time.monotonic() + 0.2
    while time.monotonic() < idle_until:
        if sink.poll(receiver):
            idle_until = time.monotonic() + 0.2
    seqs = [tag(f)[1] for f in sink.frames()]
    assert 0 < len(seqs) < n_sent, "the kernel drops what overflows its buffer; the rest arrives"
    assert seqs == sorted(set(seqs))  # in order, no duplicates
    assert receiver.stats.chunks == len(sink.chunks) == len(seqs)
    assert sender.stats.sent + sender.stats.backpressure + sender.stats.send_errors == n_sent


def test_udp_sender_when_nobody_listens_then_the_refused_sends_return_false_and_are_counted():
    sender = UdpSender(msgspec.convert({"port": free_port()}, UdpSenderConfig))
    sender.open()
    try:
        results = [sender.send(frame(seq)) for seq in range(10)]
    finally:
        sender.close()
    assert False in results
    assert sender.stats.send_errors == results.count(False) and sender.stats.sent == results.count(True)


def test_udp_receiver_when_opened_then_the_receive_buffer_is_set(receiver):
    with socket.socket(fileno=os.dup(receiver.fileno())) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 16  # Linux reports double
