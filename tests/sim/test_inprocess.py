"""sim/inprocess.py: the simulated venue behind the transport contract, in process."""
import asyncio
import time

import numpy as np
import pytest
import uvloop

from adapters.base import Inbound, Outbound, TransportClosed
from kernels.dtypes import EXEC_ACK, EXEC_FILL, MSG_ORDER, WIRE_VERSION
from sim.inprocess import SimOmsTransport
from tests.adapters.adapter_testkit import Sink
from tests.sim.sim_kit import INSTANT, T0, US, config, engine_order_frame, kinds, order, quote
from wire.frames import HEADER, encode_frame, iter_frames
from wire.schema import ExecutionReport


# ---------------------------------------------------------------------------------------------- transport
class FakeClock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def engine_tx(*orders):
    """Orders as the engine sends them: a uint8 array of concatenated frames."""
    return np.frombuffer(b"".join(engine_order_frame(o) for o in orders), np.uint8)


def reports_in(sink):
    return [msg for frame in sink.frames() for _, msg in iter_frames(frame)]


def test_sim_oms_transport_meets_the_protocols_and_refuses_when_closed():
    transport = SimOmsTransport(config(**INSTANT))
    assert isinstance(transport, Inbound) and isinstance(transport, Outbound)
    with pytest.raises(TransportClosed):
        transport.send(engine_tx(order(1)))
    with transport:
        assert transport.fileno() == -1 and transport.flush()
    with pytest.raises(TransportClosed):
        Sink().poll(transport)


def test_sim_oms_transport_when_engine_sends_its_tx_then_poll_returns_the_reports_as_whole_frames():
    with SimOmsTransport(config(**INSTANT, fee_per_unit=0.5), clock=FakeClock()) as transport:
        transport.on_market_data(encode_frame(quote(99.0, 101.0)) + encode_frame(quote(9.0, 11.0, instrument=1)))
        assert transport.send(engine_tx(*(order(i, price=200.0, instrument=i % 2) for i in range(100))))
        sink = Sink()
        assert sink.poll(transport) == 1
        reports = reports_in(sink)
        assert len(reports) == 200 and all(isinstance(r, ExecutionReport) for r in reports)
        assert [(r.price, r.fee) for r in reports[1::2]] == [(101.0, 5.0), (11.0, 5.0)] * 50
        assert (transport.stats.sent, transport.stats.chunks) == (1, 1)
        assert transport.stats.bytes_in == sum(len(c) for c in sink.chunks)
        assert sink.poll(transport) == 0


def test_sim_oms_transport_when_rx_small_then_reports_wait_and_no_frame_is_cut():
    with SimOmsTransport(config(**INSTANT), clock=FakeClock()) as transport:
        transport.send(engine_tx(*(order(i) for i in range(50))))
        sink = Sink(rx_bytes=300)
        while sink.poll(transport):
            pass  # the Sink checks every chunk is whole frames; each poll starts at offset 0
        assert len(sink.chunks) > 10
        assert [(r.order_id, r.exec_type) for r in reports_in(sink)] == \
            [(i, t) for i in range(50) for t in (EXEC_ACK, EXEC_FILL)]
        assert Sink().poll(transport, max_chunks=0) == 0


def test_sim_oms_transport_when_latency_set_then_reports_appear_only_when_the_clock_reaches_them():
    clock = FakeClock()
    with SimOmsTransport(config(ack_latency_us=100, fill_latency_us=400), clock=clock) as transport:
        transport.send(b"".join(encode_frame(order(i)) for i in range(3)))
        sink = Sink()
        clock.now = T0 + 100 * US - 1
        assert sink.poll(transport) == 0
        clock.now = T0 + 100 * US
        assert sink.poll(transport) == 1 and kinds(reports_in(sink)) == [EXEC_ACK] * 3
        clock.now = T0 + 400 * US
        assert sink.poll(transport) == 1 and kinds(reports_in(sink)) == [EXEC_ACK] * 3 + [EXEC_FILL] * 3


def test_sim_oms_transport_when_header_untrusted_then_counted_and_the_rest_of_that_send_dropped():
    with SimOmsTransport(config(**INSTANT), clock=FakeClock()) as transport:
        bad = HEADER.pack(5000, WIRE_VERSION, MSG_ORDER, 0)
        assert transport.send(encode_frame(order(1)) + bad + encode_frame(order(2)))
        assert transport.stats.oversize == 1 and transport.oms.stats.orders == 1


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_sim_oms_transport_when_attached_to_a_loop_then_called_back_when_reports_are_due(loop_factory):
    async def body():
        with SimOmsTransport(config(ack_latency_us=2000, fill_latency_us=20_000)) as transport:
            sink, seen = Sink(), []

            def on_readable():
                sink.poll(transport)
                seen.append(time.monotonic())
            transport.attach(asyncio.get_running_loop(), on_readable)
            start = time.monotonic()
            transport.send(encode_frame(order(1)))
            while len(reports_in(sink)) < 2:
                assert time.monotonic() - start < 5, "no callback"
                await asyncio.sleep(0.001)
            transport.detach()
        assert kinds(reports_in(sink)) == [EXEC_ACK, EXEC_FILL]
        assert seen[-1] - start >= 0.019  # the fill's 20 ms, give or take the loop's clock rounding
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(body())
