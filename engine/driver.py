"""The batch loop around the compiled pipeline: poll transports into the arena, run one batch, send the orders.

`Engine` owns the order of work and the OMS policy; the drivers at the end of this module (`run_event`,
`run_spin`) decide *when* a batch runs: event mode (uvloop, frames of one loop iteration coalesced) or spin mode
(busy poll on a pinned core).
"""
import asyncio
import gc
import logging
import os
import time

from adapters.base import TransportClosed
from kernels import rings
from kernels._jit import entry_point
from kernels.arena import RING_ORDERS, RING_REJECTS, RING_REPORTS, S_TX_LEN
from kernels.batch import run_batch
from kernels.dtypes import ACTIVE, EV_HALT, EV_REDUCE, EXEC_CANCELED, FRAME_HEADER_SIZE, MSG_ORDER, REDUCING
from wire.frames import MAX_FRAME_SIZE, iter_frames

log = logging.getLogger("orchestrator.engine")
MIN_REPORT_FRAME = FRAME_HEADER_SIZE + 1 + 10  # header, array tag, ten fields of one byte: the smallest report


class EngineStats:
    """Python-side facts the kernels cannot see: what happened at the OMS link."""

    def __init__(self):
        self.batches = 0
        self.oms_sends = 0
        self.oms_backpressure = 0
        self.oms_disconnects = 0
        self.orders_unsent = 0  # orders that never reached the OMS; each is canceled in the engine's books

    def as_dict(self):
        return dict(vars(self))


class Engine:
    """One engine process's state and its batch step. Not thread-safe: one driver calls it."""

    def __init__(self, state, inbound, oms, *, on_disconnect="halt", clock=time.time_ns, listeners=(),
                 backoff_ms=(100, 5000)):
        self.state = state
        self.inbound = list(inbound)
        self.oms = oms
        self.on_disconnect = on_disconnect
        self.clock = clock
        self.listeners = list(listeners)  # each gets on_batch(orders, rejects, now_ns) with ring views
        self.stats = EngineStats()
        self._batch = entry_point(run_batch)
        self._arena, self._layout = state.arena, state.layout
        self._scalars = state.scalars
        self._cursors = state.cursors
        # The OMS's share of rx: at most as many reports as the report ring holds, each at its smallest encoding,
        # but never less than the room the OMS transport needs to read at all (one frame; Aeron: one message).
        need = max(MAX_FRAME_SIZE, getattr(getattr(oms, "config", None), "max_message_bytes", 0))
        self._oms_rx = state.rx[:min(len(state.rx), max(need, len(state.reports) * MIN_REPORT_FRAME))]
        self._offset = 0
        self._chunks = 0
        self._oms_up = True
        self.recorder = None  # a ReplayWriter: every batch's inbound chunks, stamped with the batch clock
        self.backoff_ns = (backoff_ms[0] * 1_000_000, backoff_ms[1] * 1_000_000)
        self._backoff_ns = self.backoff_ns[0]
        self._next_connect_ns = 0

    # ------------------------------------------------------------------------------------------ the step
    def poll(self):
        """Read what every transport has into rx; return the number of chunks now waiting.

        The OMS is read first in a batch, into `oms_rx` (the front of rx, sized so that its reports always fit
        the report ring): a report the OMS link delivered is never dropped at a full ring. Inbound signals
        come after, into the rest of rx."""
        if self._chunks == 0:
            self._read(self.oms, self._oms_rx)
        for transport in self.inbound:
            self._read(transport, self.state.rx)
        return self._chunks

    def _read(self, transport, rx):
        room = len(self.state.rx_sizes) - self._chunks
        if room <= 0:
            return
        try:
            n, self._offset = transport.poll(rx, self._offset, self.state.rx_sizes, self._chunks, room)
        except TransportClosed:
            if transport is not self.oms:
                raise
            self.oms_down()
            return
        self._chunks += n

    def step(self, now_ns=None):
        """Run one batch over what poll() gathered; send the orders; return how many orders it placed."""
        now = self.clock() if now_ns is None else now_ns
        if self.recorder is not None and self._chunks:
            self.recorder.write_polled(self.state.rx, 0, self.state.rx_sizes, 0, self._chunks, now)
        placed = self._batch(self._arena, self._layout, self._chunks, now)
        self._offset = self._chunks = 0
        self.stats.batches += 1
        if self._scalars.item(S_TX_LEN):
            self._send()
        self._drain(now)
        return placed

    def _send(self):
        scalars = self._scalars
        frames = self.state.tx[:scalars.item(S_TX_LEN)]
        try:
            sent = self._oms_up and self.oms.send(frames)
        except TransportClosed:
            self.oms_down()
            sent = False
        if sent:
            scalars[S_TX_LEN] = 0
            self.stats.oms_sends += 1
        elif self._oms_up:
            self.stats.oms_backpressure += 1  # frames stay in tx; the next batch places fewer orders
        else:
            self._cancel_unsent(frames)
            scalars[S_TX_LEN] = 0

    def _drain(self, now):
        """Hand the batch's new orders and rejects to the listeners, then release them from their rings."""
        cursors = self._cursors
        orders_tail, orders_head = rings.available(cursors, RING_ORDERS)
        rejects_tail, rejects_head = rings.available(cursors, RING_REJECTS)
        if orders_tail == orders_head and rejects_tail == rejects_head:
            return
        orders = rings.slices(self.state.orders, orders_tail, orders_head)
        rejects = rings.slices(self.state.rejects, rejects_tail, rejects_head)
        for listener in self.listeners:
            listener.on_batch(orders, rejects, now)
        rings.release(cursors, RING_ORDERS, orders_head)
        rings.release(cursors, RING_REJECTS, rejects_head)

    # ------------------------------------------------------------------------------------------ OMS link policy
    def oms_down(self):
        """The OMS link is gone: apply the disconnect policy once, and start reconnecting with backoff."""
        if not self._oms_up:
            return
        self._oms_up = False
        self._next_connect_ns = self.clock() + self._backoff_ns
        self.stats.oms_disconnects += 1
        event = EV_HALT if self.on_disconnect == "halt" else EV_REDUCE
        moved = []
        for s, st in enumerate(self.state.strategies):
            if st["state"] in (ACTIVE, REDUCING) and not (event == EV_REDUCE and st["state"] == REDUCING):
                self.state.apply_event(s, event)
                moved.append(s)
        log.error("OMS connection lost: %d strategies moved by policy %r; orders not sent are canceled locally",
                  len(moved), self.on_disconnect)

    @property
    def oms_up(self):
        return self._oms_up

    def maintain(self, now_ns):
        """Housekeeping between batches: reconnect a lost OMS link with exponential backoff."""
        if self._oms_up or not hasattr(self.oms, "connect") or now_ns < self._next_connect_ns:
            return
        try:
            connected = self.oms.connect()
        except TransportClosed:  # the attempt failed: wait, longer each time, before the next one
            self._next_connect_ns = now_ns + self._backoff_ns
            self._backoff_ns = min(2 * self._backoff_ns, self.backoff_ns[1])
            return
        if connected:
            self._oms_up = True
            self._backoff_ns = self.backoff_ns[0]
            log.warning("OMS connection restored; strategies stay %s until an operator activates them",
                        "halted" if self.on_disconnect == "halt" else "reduce-only")
        # else the attempt is under way: look again at the next housekeeping, not after a backoff

    def _cancel_unsent(self, frames):
        """Orders encoded for an OMS that is gone: cancel each in the engine's books, count it."""
        reports = self.state.reports
        cursors = self.state.cursors
        for msg_type, order in iter_frames(bytes(frames)):
            if msg_type != MSG_ORDER:
                continue
            # Room is certain: the batch just applied every report, and the state builder sizes the report
            # ring to hold a full transmit buffer of orders.
            rec = reports[rings.claim(cursors, RING_REPORTS, len(reports))]
            rec["order_id"], rec["strategy"], rec["deploy"] = order.order_id, order.strategy, order.deploy
            rec["exec_type"], rec["qty"], rec["price"], rec["leaves"] = EXEC_CANCELED, 0, 0.0, 0
            rec["fee"], rec["ts_ns"], rec["reason"] = 0.0, self.clock(), 0
            rings.publish(cursors, RING_REPORTS)
            self.stats.orders_unsent += 1


def warm_up(engine):
    """Run one empty batch so every compiled path and arena page is touched before the first real signal."""
    engine.step()


# ---------------------------------------------------------------------------------------------- drivers
HEARTBEAT_NS = 20_000_000  # an idle engine still runs a batch this often: cool-downs, reconnects


async def run_event(engine, stop):
    """Event mode: transports wake the loop; every read of one loop iteration lands in one batch.

    A reader callback polls its data into rx at once and schedules one batch with call_soon, which runs after
    every other ready callback of this iteration: frames that arrive together are decided together."""
    loop = asyncio.get_running_loop()
    scheduled = False

    def batch():
        nonlocal scheduled
        scheduled = False
        engine.poll()
        engine.step()

    def on_readable():
        nonlocal scheduled
        engine.poll()
        if not scheduled:
            scheduled = True
            loop.call_soon(batch)

    for transport in engine.inbound + [engine.oms]:
        transport.attach(loop, on_readable)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_NS / 1e9)
            except TimeoutError:
                engine.maintain(engine.clock())
                on_readable()
    finally:
        for transport in engine.inbound + [engine.oms]:
            transport.detach()
    engine.poll()
    engine.step()


def run_spin(engine, stop, cpu=None):
    """Spin mode: busy-poll every transport on one (optionally pinned) core; a batch whenever data arrived.
    The garbage collector is frozen and paused while spinning: a collection is a latency spike, and the
    steady state allocates nothing that lives past one poll."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    clock = engine.clock
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        last = clock()
        while not stop.is_set():
            if engine.poll():
                engine.step()
                last = clock()
            else:
                now = clock()
                if now - last >= HEARTBEAT_NS:
                    engine.maintain(now)
                    engine.step(now)
                    last = now
        engine.poll()
        engine.step()
    finally:
        gc.enable()
        gc.unfreeze()
