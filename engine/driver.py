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
from kernels.arena import RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, S_STOP_CHUNK, S_TX_LEN
from kernels.batch import carry_over, run_batch
from kernels.dtypes import ACTIVE, EV_HALT, EV_REDUCE, EXEC_CANCELED, MSG_ORDER, REDUCING
from kernels.pipeline import apply_reports
from wire.frames import iter_frames

log = logging.getLogger("orchestrator.engine")
SOURCE_OMS = 0  # rx_sources of a chunk from the OMS link (and of a tick); the listeners are 1, 2, ...


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
    """One engine process's state and its batch step. Not thread-safe: one driver calls it.

    `oms` is the OMS link's transport, or None when the simulated venue runs inside the batch ([oms] kind
    "sim"): orders then never leave the arena, and the venue's reports are applied in stream time."""

    def __init__(self, state, inbound, oms, *, on_disconnect="halt", clock=time.time_ns, listeners=(),
                 backoff_ms=(100, 5000)):
        self.state = state
        self.inbound = list(inbound)
        self.oms = oms
        self.on_disconnect = on_disconnect
        self.clock = clock
        self.listeners = list(listeners)  # each gets on_batch(orders, rejects, fills, now_ns) with ring views
        self.stats = EngineStats()
        self._batch = entry_point(run_batch)
        self._apply_reports = entry_point(apply_reports)
        self._carry_over = entry_point(carry_over)
        self._arena, self._layout = state.arena, state.layout
        self._scalars = state.scalars
        self._cursors = state.cursors
        # where each chunk came from: 0 the OMS link, 1.. the listeners in order (rx_sources)
        self._sources = ([] if oms is None else [(oms, SOURCE_OMS)]) + [
            (t, SOURCE_OMS + 1 + k) for k, t in enumerate(self.inbound)]
        self._offset = 0
        self._chunks = 0
        self._oms_up = True
        self.recorder = None  # a ReplayWriter: every inbound chunk (and tick) once, with its arrival time
        self.backoff_ns = (backoff_ms[0] * 1_000_000, backoff_ms[1] * 1_000_000)
        self._backoff_ns = self.backoff_ns[0]
        self._next_connect_ns = 0

    # ------------------------------------------------------------------------------------------ the step
    def poll(self):
        """Read what every transport has into rx after what is already waiting; return the chunks waiting. The
        OMS link is read first: its reports then come before the signals read in the same round."""
        for transport, source in self._sources:
            self._read(transport, source)
        return self._chunks

    def _read(self, transport, source):
        state = self.state
        first = self._chunks
        room = len(state.rx_sizes) - first
        if room <= 0:
            return
        try:
            n, self._offset = transport.poll(state.rx, self._offset, state.rx_sizes, first, room)
        except TransportClosed:
            if transport is not self.oms:
                raise
            self.oms_down()
            return
        if n:
            self._arrived(first, n, self.clock(), source)

    def _arrived(self, first, n, now, source):
        """Chunks first..first+n are in rx: stamp them with their arrival time and source; record them."""
        state = self.state
        state.rx_times[first:first + n] = now
        state.rx_sources[first:first + n] = source
        if self.recorder is not None:
            start = int(state.rx_sizes[:first].sum())
            self.recorder.write_polled(state.rx, start, state.rx_sizes, first, n, now)
        self._chunks = first + n

    def step(self, now_ns=None):
        """Run one batch over what poll() gathered (with nothing gathered: a tick, stream time moving on, so
        cool-downs and the venue's due reports happen); send the orders; return how many orders it placed."""
        if self._chunks == 0:
            self.state.rx_sizes[0] = 0
            self._arrived(0, 1, self.clock() if now_ns is None else now_ns, SOURCE_OMS)
        chunks = self._chunks
        placed = self._batch(self._arena, self._layout, chunks)
        self.stats.batches += 1
        if self._scalars.item(S_STOP_CHUNK) == chunks:
            self._offset = self._chunks = 0
        else:  # back-pressure: what the batch did not take goes first next time
            self._chunks = self._carry_over(self._arena, self._layout, chunks)
            self._offset = int(self.state.rx_sizes[:self._chunks].sum())
        if self._scalars.item(S_TX_LEN):
            self._send()
        self._drain(self.clock() if now_ns is None else now_ns)
        return placed

    def venue_due_ns(self):
        """When the in-batch venue's next report is due (None: nothing pending, or no venue here)."""
        venue = self.state.venue[0]
        return int(self.state.venue_events[0]["due_ns"]) if venue["on"] and venue["pending"] else None

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
        """Hand the batch's new orders, rejects and fills to the listeners, then release them from their rings."""
        cursors, state = self._cursors, self.state
        orders_tail, orders_head = rings.available(cursors, RING_ORDERS)
        rejects_tail, rejects_head = rings.available(cursors, RING_REJECTS)
        fills_tail, fills_head = rings.available(cursors, RING_FILLS)
        if orders_tail == orders_head and rejects_tail == rejects_head and fills_tail == fills_head:
            return
        orders = rings.slices(state.orders, orders_tail, orders_head)
        rejects = rings.slices(state.rejects, rejects_tail, rejects_head)
        fills = rings.slices(state.fills, fills_tail, fills_head)
        for listener in self.listeners:
            listener.on_batch(orders, rejects, fills, now)
        rings.release(cursors, RING_ORDERS, orders_head)
        rings.release(cursors, RING_REJECTS, rejects_head)
        rings.release(cursors, RING_FILLS, fills_head)

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
        if self._oms_up or self.oms is None or not hasattr(self.oms, "connect") or now_ns < self._next_connect_ns:
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
        now = self.clock()
        for msg_type, order in iter_frames(bytes(frames)):
            if msg_type != MSG_ORDER:
                continue
            # The batch consumes every report it reads, so the ring is empty between batches; applied a ring at
            # a time, so as many orders as tx holds fit in any ring size.
            index = rings.claim(cursors, RING_REPORTS, len(reports))
            if index == rings.NO_ROOM:
                self._apply_reports(self._arena, self._layout, now)
                index = rings.claim(cursors, RING_REPORTS, len(reports))
            rec = reports[index]
            rec["order_id"], rec["strategy"], rec["deploy"] = order.order_id, order.strategy, order.deploy
            rec["exec_type"], rec["qty"], rec["price"], rec["leaves"] = EXEC_CANCELED, 0, 0.0, 0
            rec["fee"], rec["ts_ns"], rec["reason"] = 0.0, now, 0
            rings.publish(cursors, RING_REPORTS)
            self.stats.orders_unsent += 1
        self._apply_reports(self._arena, self._layout, now)


def warm_up(engine):
    """Run one empty batch so every compiled path and arena page is touched before the first real signal."""
    engine.step()


# ---------------------------------------------------------------------------------------------- drivers
HEARTBEAT_NS = 20_000_000  # an idle engine still runs a batch this often: cool-downs, reconnects


async def run_event(engine, stop):
    """Event mode: transports wake the loop; every read of one loop iteration lands in one batch.

    A reader callback polls its data into rx at once and schedules one batch with call_soon, which runs after
    every other ready callback of this iteration: frames that arrive together are decided together. When the
    simulated venue runs in the batch, a timer runs a tick when its next report is due."""
    loop = asyncio.get_running_loop()
    scheduled = False
    venue_timer = None

    def batch():
        nonlocal scheduled, venue_timer
        scheduled = False
        engine.poll()
        engine.step()
        due = engine.venue_due_ns()
        if due is not None and venue_timer is None:
            venue_timer = loop.call_later(max(0, due - engine.clock()) / 1e9, venue_tick)

    def venue_tick():
        nonlocal venue_timer
        venue_timer = None
        on_readable()

    def on_readable():
        nonlocal scheduled
        engine.poll()
        if not scheduled:
            scheduled = True
            loop.call_soon(batch)

    transports = engine.inbound + ([] if engine.oms is None else [engine.oms])
    for transport in transports:
        transport.attach(loop, on_readable)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), HEARTBEAT_NS / 1e9)
            except TimeoutError:
                engine.maintain(engine.clock())
                on_readable()
    finally:
        for transport in transports:
            transport.detach()
        if venue_timer is not None:
            venue_timer.cancel()
    engine.poll()
    engine.step()


def run_spin(engine, stop, cpu=None):
    """Spin mode: busy-poll every transport on one (optionally pinned) core; a batch whenever data arrived, or
    when the in-batch venue has a report due. The garbage collector is frozen and paused while spinning: a
    collection is a latency spike, and the steady state allocates nothing that lives past one poll."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    clock = engine.clock
    venue = engine.state.venue[0]["on"]
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
                due = engine.venue_due_ns() if venue else None
                if now - last >= HEARTBEAT_NS or (due is not None and now >= due):
                    engine.maintain(now)
                    engine.step(now)
                    last = now
        engine.poll()
        engine.step()
    finally:
        gc.enable()
        gc.unfreeze()
