"""TCP faults: half frames, untrusted headers, many clients, and the client's connect and report paths."""
import asyncio
import random
import socket
import time

import msgspec
import pytest
import uvloop

from adapters.base import TransportClosed
from adapters.tcp import TcpClient, TcpClientConfig, TcpServer, TcpServerConfig
from kernels.dtypes import MAX_FRAME_BODY, MSG_SIGNAL, WIRE_VERSION
from tests.adapters.adapter_testkit import Sink, frame, free_port, max_frame, split_frames, tag
from wire.frames import HEADER


@pytest.fixture
def server():
    s = TcpServer(msgspec.convert({}, TcpServerConfig))
    s.open()
    yield s
    s.close()


def raw_client(server):
    sock = socket.create_connection(server.address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small pieces stay small pieces on the wire
    return sock


def by_source(frames):
    out = {}
    for f in frames:
        source, seq = tag(f)
        out.setdefault(source, []).append(seq)
    return out


def test_tcp_server_when_a_client_sends_half_a_frame_and_leaves_then_it_is_counted_and_others_are_served(server):
    with raw_client(server) as good, raw_client(server) as bad:
        bad.sendall(frame(0, source=9) + max_frame(1, source=9)[:500])
        good.sendall(frame(0, source=1))
        sink = Sink().drain_frames(server, 2)
        bad.close()
        good.sendall(frame(1, source=1))
        sink.drain(server, lambda s: s.n_frames == 3 and server.stats.disconnects == 1)
        assert server.n_connections == 1
    assert by_source(sink.frames()) == {9: [0], 1: [0, 1]}
    assert server.stats.partial_discarded == 1 and server.stats.connections == 2


@pytest.mark.parametrize("bad_header, counter", [
    (HEADER.pack(MAX_FRAME_BODY + 1, WIRE_VERSION, MSG_SIGNAL, 0), "oversize"),
    (HEADER.pack(0xFFFF_FFFF, WIRE_VERSION, MSG_SIGNAL, 0), "oversize"),
    (HEADER.pack(16, WIRE_VERSION + 1, MSG_SIGNAL, 0), "bad_version"),
], ids=["body_too_long", "body_4gb", "bad_version"])
def test_tcp_server_when_a_header_cannot_be_trusted_then_only_that_client_is_dropped(server, bad_header, counter):
    with raw_client(server) as bad, raw_client(server) as good:
        bad.sendall(frame(0, source=9) + bad_header + bytes(20))  # the header is judged before its body comes
        good.sendall(frame(0, source=1))
        sink = Sink().drain(server, lambda s: getattr(server.stats, counter) == 1 and s.n_frames == 2)
        bad.settimeout(5)
        try:
            assert bad.recv(1) == b""  # the server hung up on it
        except ConnectionResetError:
            pass  # or reset it: it had unread bytes
        good.sendall(frame(1, source=1))
        sink.drain_frames(server, 3)
        assert server.n_connections == 1
    # The whole frame before the bad header was delivered; nothing after it was.
    assert by_source(sink.frames()) == {9: [0], 1: [0, 1]}
    assert server.stats.disconnects == 1 and server.stats.partial_discarded == 0


def test_tcp_server_when_many_clients_interleave_pieces_then_each_clients_frames_arrive_whole_and_in_order(server):
    n_clients, n_frames = 8, 60
    rng = random.Random(7)
    streams = [b"".join(frame(seq, source=c) if seq % 10 else max_frame(seq, source=c) for seq in range(n_frames))
               for c in range(n_clients)]
    clients = [raw_client(server) for _ in range(n_clients)]
    sink = Sink(rx_bytes=1 << 14)  # small rx: room runs out in some polls
    try:
        sent = [0] * n_clients
        while any(pos < len(s) for pos, s in zip(sent, streams)):
            c = rng.choice([i for i in range(n_clients) if sent[i] < len(streams[i])])
            piece = rng.choice([1, 3, 7, 8, 9, 50, 300, 1500])  # cuts inside headers and bodies
            clients[c].sendall(streams[c][sent[c]:sent[c] + piece])
            sent[c] += piece
            if rng.random() < 0.3:
                sink.poll(server)
        sink.drain_frames(server, n_clients * n_frames)
    finally:
        for sock in clients:
            sock.close()
    assert by_source(sink.frames()) == {c: list(range(n_frames)) for c in range(n_clients)}
    for chunk in sink.chunks:  # one chunk is one connection's read
        assert len({tag(f)[0] for f in split_frames(chunk)}) == 1
    assert server.stats.connections == n_clients


# ---------------------------------------------------------------------------------------------- client
@pytest.fixture
def listener():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def wait_connected(client):
    deadline = time.monotonic() + 5
    while not client.connect():
        assert time.monotonic() < deadline, "loopback connect did not complete"
        time.sleep(0.001)
    return client


def connected_client(port):
    client = TcpClient(msgspec.convert({"port": port}, TcpClientConfig))
    client.open()
    return wait_connected(client)


def test_tcp_client_when_nobody_listens_then_connect_raises_transport_closed_and_counts_it():
    client = TcpClient(msgspec.convert({"port": free_port()}, TcpClientConfig))
    client.open()
    try:
        sink = Sink()
        with pytest.raises(TransportClosed):
            sink.poll(client)  # no attempt under way: the medium is not there
        with pytest.raises(TransportClosed, match="refused"):
            wait_connected(client)
        assert client.stats.connect_failures == 1 and not client.connected
        with pytest.raises(TransportClosed):
            client.send(frame(0))
    finally:
        client.close()


def test_tcp_client_when_reports_arrive_in_pieces_then_poll_returns_whole_frames_until_the_peer_leaves(listener):
    client = connected_client(listener.getsockname()[1])
    try:
        peer, _ = listener.accept()
        with peer:
            stream = b"".join(frame(seq, source=5) for seq in range(30))
            for cut in range(0, len(stream), 13):
                peer.sendall(stream[cut:cut + 13])
            sink = Sink().drain_frames(client, 30)
            assert [tag(f) for f in sink.frames()] == [(5, seq) for seq in range(30)]
            peer.sendall(frame(30, source=5)[:11])  # half a report, then the OMS goes away
        with pytest.raises(TransportClosed):
            sink.drain(client, lambda s: False)
        assert not client.connected
        assert (client.stats.disconnects, client.stats.partial_discarded) == (1, 1)
        with pytest.raises(TransportClosed):
            sink.poll(client)  # stays gone until the engine reconnects

        client.reconnect()
        wait_connected(client)
        peer, _ = listener.accept()
        with peer:
            peer.sendall(frame(31, source=5))
            sink.drain_frames(client, 31)
        assert tag(sink.frames()[-1]) == (5, 31) and client.stats.connections == 2
    finally:
        client.close()


def test_tcp_client_when_a_report_header_is_untrusted_then_frames_before_it_arrive_and_the_next_poll_raises(listener):
    client = connected_client(listener.getsockname()[1])
    try:
        peer, _ = listener.accept()
        with peer:
            peer.sendall(frame(0, source=5) + HEADER.pack(MAX_FRAME_BODY + 1, WIRE_VERSION, MSG_SIGNAL, 0))
            sink = Sink().drain_frames(client, 1)
            with pytest.raises(TransportClosed):
                sink.poll(client)
        assert [tag(f) for f in sink.frames()] == [(5, 0)]
        assert (client.stats.oversize, client.stats.disconnects) == (1, 1) and not client.connected
    finally:
        client.close()


def test_tcp_client_when_the_peer_is_gone_then_send_raises_transport_closed(listener):
    client = connected_client(listener.getsockname()[1])
    try:
        peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
        peer.close()
        deadline = time.monotonic() + 5
        with pytest.raises(TransportClosed):
            while time.monotonic() < deadline:
                client.send(frame(0))
                time.sleep(0.001)
        assert client.stats.disconnects == 1 and not client.connected
    finally:
        client.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_tcp_client_when_attached_and_reconnected_then_the_new_socket_is_watched(listener, loop_factory):
    client = connected_client(listener.getsockname()[1])
    sink = Sink()

    async def main():
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()
        arrived = asyncio.Event()

        def on_readable():
            try:
                sink.poll(client)
            except TransportClosed:
                lost.set()
            if sink.n_frames:
                arrived.set()

        client.attach(loop, on_readable)
        peer, _ = listener.accept()
        peer.close()
        await asyncio.wait_for(lost.wait(), 5)
        while not client.connect():  # the engine's reconnect policy, minus the backoff
            await asyncio.sleep(0.001)
        peer, _ = listener.accept()
        with peer:
            peer.sendall(frame(7, source=2))
            await asyncio.wait_for(arrived.wait(), 5)
        client.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main())
    finally:
        client.close()
    assert [tag(f) for f in sink.frames()] == [(2, 7)]


def test_tcp_client_when_the_peer_dies_with_bytes_held_then_they_are_counted_as_discarded():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = TcpClient(msgspec.convert({"port": listener.getsockname()[1], "sndbuf_bytes": 4096}, TcpClientConfig))
    try:
        client.open()
        wait_connected(client)
        peer, _ = listener.accept()
        seq = 0
        while client.send(max_frame(seq)):  # the peer never reads
            seq += 1
        if not client.pending_bytes:
            pytest.skip("this kernel took only whole frames: nothing held")
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close = RST
        peer.close()
        deadline = time.monotonic() + 5
        with pytest.raises(TransportClosed):
            while time.monotonic() < deadline:
                client.flush()
                time.sleep(0.001)
        assert client.stats.held_discarded == 1 and client.pending_bytes == 0
    finally:
        client.close()
        listener.close()
