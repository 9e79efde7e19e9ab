"""One contract, every transport: the same test bodies run against each sender/receiver pair over real
loopback sockets or temp files."""
import asyncio
import select
import time

import msgspec
import pytest
import uvloop

from adapters.aeron import (
    AeronDriverConfig, AeronNode, AeronReceiver, AeronReceiverConfig, AeronSender, AeronSenderConfig,
)
from adapters.base import Inbound, Outbound, TransportClosed
from adapters.journal import JournalConfig
from adapters.tcp import TcpClient, TcpClientConfig, TcpServer, TcpServerConfig
from adapters.udp import UdpReceiver, UdpReceiverConfig, UdpSender, UdpSenderConfig
from tests.adapters.adapter_testkit import Sink, frame, free_port, max_frame, split_frames, tag
from wire.frames import MAX_FRAME_SIZE

UDP_MAX_DATAGRAM = 2048  # small, so the room tests need only a small rx


def config(cls, **fields):
    """Configs are built by decoding, as the engine builds them from TOML: constructors do not validate."""
    return msgspec.convert(fields, cls)


class UdpPair:
    name, one_chunk_per_send, min_room = "udp", True, UDP_MAX_DATAGRAM
    no_backpressure = "on loopback a full receiver drops datagrams; the sender never blocks"

    def __init__(self, tmp_path):
        self.receiver = UdpReceiver(config(UdpReceiverConfig, max_datagram_bytes=UDP_MAX_DATAGRAM))
        self.receiver.open()
        self.sender = UdpSender(config(UdpSenderConfig, port=self.receiver.address[1]))
        self.sender.open()

    def ready(self):
        pass


class TcpPair:
    # Small buffers: back-pressure after some 100 kB instead of megabytes; still room for sent_units().
    name, one_chunk_per_send, min_room, no_backpressure = "tcp", False, MAX_FRAME_SIZE, None

    def __init__(self, tmp_path):
        self.receiver = TcpServer(config(TcpServerConfig, rcvbuf_bytes=1 << 16))
        self.receiver.open()
        self.sender = TcpClient(config(TcpClientConfig, port=self.receiver.address[1], sndbuf_bytes=1 << 16))
        self.sender.open()
        deadline = time.monotonic() + 5
        while not self.sender.connect():
            assert time.monotonic() < deadline, "loopback connect did not complete"
            time.sleep(0.001)

    def ready(self):
        pass


class AeronIpcPair:
    """A real embedded media driver in the test's directory. A 64 KiB term: the publication window (half a term)
    fills after some 30 of the largest frames, so back-pressure comes quickly."""
    name, one_chunk_per_send, min_room, no_backpressure = "aeron-ipc", True, UDP_MAX_DATAGRAM, None
    channel = "aeron:ipc?term-length=64k"

    def __init__(self, tmp_path):
        node = AeronNode(config(AeronDriverConfig, directory=str(tmp_path / "aeron")))
        stream = {"channel": self.channel, "stream_id": 1001}
        self.receiver = AeronReceiver(config(AeronReceiverConfig, streams=[stream], max_message_bytes=self.min_room),
                                      node)
        self.receiver.open()
        self.sender = AeronSender(config(AeronSenderConfig, stream=stream), node)
        self.sender.open()
        deadline = time.monotonic() + 5
        while not self.sender.connect():
            assert time.monotonic() < deadline, "the publication did not connect to the subscription"
            time.sleep(0.001)

    def ready(self):
        pass


class AeronUdpPair(AeronIpcPair):
    name = "aeron-udp"

    def __init__(self, tmp_path):
        self.channel = f"aeron:udp?endpoint=127.0.0.1:{free_port()}|term-length=64k"
        super().__init__(tmp_path)


@pytest.fixture(params=[UdpPair, TcpPair, AeronIpcPair, AeronUdpPair], ids=lambda p: p.name)
def pair(request, tmp_path):
    p = request.param(tmp_path)
    yield p
    p.sender.close()
    p.receiver.close()


def sent_units():
    """What the tests send: 40 frames in 38 sends: one-frame sends of many sizes (one of the largest frame
    allowed) and one send that carries three frames."""
    return ([frame(i) for i in range(20)] + [max_frame(20)] + [frame(21) + frame(22) + frame(23)]
            + [frame(i) for i in range(24, 40)])


N_FRAMES = 40


def test_transport_when_built_then_it_meets_the_protocols(pair):
    assert isinstance(pair.sender, Outbound) and isinstance(pair.receiver, Inbound)


def test_transport_when_frames_are_sent_then_they_arrive_whole_and_in_order(pair):
    units = sent_units()
    assert all(pair.sender.send(u) for u in units)
    pair.ready()
    sink = Sink().drain_frames(pair.receiver, N_FRAMES)  # Sink checks that chunk sizes add up on every poll
    assert [tag(f) for f in sink.frames()] == [(0, seq) for seq in range(N_FRAMES)]
    assert b"".join(sink.chunks) == b"".join(units)
    if pair.one_chunk_per_send:
        assert sink.chunks == units
    total = sum(map(len, units))
    assert (pair.sender.stats.sent, pair.sender.stats.bytes_out) == (len(units), total)
    assert (pair.receiver.stats.chunks, pair.receiver.stats.bytes_in) == (len(sink.chunks), total)


def test_transport_when_rx_room_or_chunk_slots_run_out_then_the_rest_waits_for_the_next_poll(pair):
    units = sent_units()
    assert all(pair.sender.send(u) for u in units)
    pair.ready()
    sink = Sink(rx_bytes=pair.min_room + 600, slots=8)
    assert sink.poll(pair.receiver, offset=len(sink.rx) - 1) == 0  # 1 byte of room: nothing read, nothing lost
    assert sink.poll(pair.receiver, max_chunks=0) == 0
    assert sink.poll(pair.receiver, chunk_index=8) == 0  # rx_sizes full
    sink.drain(pair.receiver, lambda s: s.chunks, offset=100, chunk_index=3, max_chunks=1)
    assert len(sink.chunks) == 1
    # The rest, through a small rx from a non-zero offset: every poll honours room and slots (Sink checks).
    sink.drain_frames(pair.receiver, N_FRAMES, offset=37, chunk_index=2)
    assert [tag(f) for f in sink.frames()] == [(0, seq) for seq in range(N_FRAMES)]


def test_transport_when_the_medium_is_full_then_send_returns_false_and_counts_it(pair):
    if pair.no_backpressure:
        pytest.skip(f"{pair.name} has no back-pressure: {pair.no_backpressure}")
    accepted, refused = [], 0
    while refused == 0:  # nobody reads: the socket buffers fill
        assert len(accepted) < 100_000, "no back-pressure after 100k frames"
        if pair.sender.send(max_frame(len(accepted))):
            accepted.append(max_frame(len(accepted)))
        else:
            refused += 1
    assert pair.sender.stats.backpressure == 1
    sink = Sink()
    retry = max_frame(len(accepted))  # the refused frame is still the caller's: retry it while the receiver drains
    deadline = time.monotonic() + 5
    while not pair.sender.send(retry):
        assert time.monotonic() < deadline
        refused += 1
        sink.poll(pair.receiver)
    accepted.append(retry)
    while not pair.sender.flush():
        assert time.monotonic() < deadline
        sink.poll(pair.receiver)
    sink.drain_frames(pair.receiver, len(accepted))
    assert sink.frames() == accepted  # nothing refused arrived, nothing accepted was lost
    assert pair.sender.stats.backpressure == refused
    assert pair.sender.stats.sent == len(accepted)


def test_transport_when_polled_on_readiness_then_poll_ready_delivers_the_same_and_a_spurious_wake_reads_nothing(
        pair):
    """What the spin driver does: one epoll over the descriptors, poll_ready for a ready one (every pass for a
    transport without one); a readiness that turns out empty (another reader, a spurious wake) reads nothing."""
    units = sent_units()
    assert all(pair.sender.send(u) for u in units)
    pair.ready()
    sink, fd = Sink(), pair.receiver.fileno()
    epoll = select.epoll()
    if fd >= 0:
        epoll.register(fd, select.EPOLLIN)
    deadline = time.monotonic() + 5
    try:
        while sink.n_frames < N_FRAMES:
            assert time.monotonic() < deadline, f"{sink.n_frames} frames of {N_FRAMES}"
            if fd < 0 or epoll.poll(0.01):
                sink.poll(pair.receiver, ready=True)
        assert [tag(f) for f in sink.frames()] == [(0, seq) for seq in range(N_FRAMES)]
        assert sink.poll(pair.receiver, ready=True) == 0, "nothing there: nothing read, nothing raised"
    finally:
        epoll.close()


def test_transport_when_closed_twice_then_the_second_close_is_a_no_op_and_use_raises(pair):
    pair.ready()
    sink = Sink()
    for transport in (pair.sender, pair.receiver):
        transport.close()
        transport.close()
        assert transport.closed and transport.fileno() == -1
    with pytest.raises(TransportClosed):
        sink.poll(pair.receiver)
    with pytest.raises(TransportClosed):
        sink.poll(pair.receiver, ready=True)
    with pytest.raises(TransportClosed):
        pair.sender.send(frame(0))


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_transport_when_attached_to_an_event_loop_then_readiness_drives_poll(pair, loop_factory):
    sink = Sink()

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_readable():
            sink.poll(pair.receiver)
            if sink.n_frames >= N_FRAMES and not done.done():
                done.set_result(None)

        pair.receiver.attach(loop, on_readable)
        try:
            for unit in sent_units():
                assert pair.sender.send(unit)
                await asyncio.sleep(0)
            await asyncio.wait_for(done, 5)
        finally:
            pair.receiver.close()  # close detaches: no fd is closed while the loop still watches it

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert [tag(f) for f in sink.frames()] == [(0, seq) for seq in range(N_FRAMES)]


@pytest.mark.parametrize("cls", [UdpReceiverConfig, UdpSenderConfig, TcpServerConfig, TcpClientConfig,
                                 JournalConfig, AeronDriverConfig, AeronReceiverConfig,
                                 AeronSenderConfig])
def test_transport_config_when_a_key_is_unknown_then_decoding_names_it(cls):
    with pytest.raises(msgspec.ValidationError, match="unknown field `hots`"):
        msgspec.toml.decode(b'hots = "127.0.0.1"\n', type=cls)


def test_transport_config_when_a_value_is_out_of_range_then_decoding_names_the_key():
    with pytest.raises(msgspec.ValidationError, match=r"\$\.port"):
        msgspec.toml.decode(b"port = 70000\n", type=UdpReceiverConfig)
    assert msgspec.toml.decode(b"", type=UdpReceiverConfig).host == "127.0.0.1"  # loopback defaults


def test_split_frames_helper_when_a_chunk_is_not_whole_frames_then_it_fails():
    with pytest.raises(AssertionError):
        split_frames(frame(1)[:-1])
