"""The batch loop around the compiled pipeline: poll transports into the arena, run one batch, send the orders.

`Engine` owns the order of work and the OMS policy; the drivers at the end of this module (`run_event`,
`run_spin`) decide *when* a batch runs: event mode (uvloop: a transport's readiness callback reads it and runs the
batch) or spin mode (busy poll on a pinned core, one epoll over every descriptor).
"""
import asyncio
import gc
import logging
import os
import struct
import time
from collections import deque
from concurrent.futures import Future

import numpy as np

from adapters.base import TransportClosed
from engine.commands import CancelUnsent, HaltAll
from engine.control import Control
from engine.wait import Readiness
from kernels import rings
from kernels._jit import entry_point
from kernels.arena import (
    FIRST_LISTENER, N_RINGS, RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, SOURCE_OMS, S_STOP_CHUNK, S_STOP_POS,
    S_TX_LEN,
)
from kernels.batch import carry_over, run_batch
from kernels.codec import ORDER_FRAME_SIZE
from kernels.journal import LOAD_BYTES, LOAD_CHUNKS, LOAD_TIME, load_arrivals
from kernels.dtypes import (
    C_ORDERS, C_ORDERS_CANCELED, C_ORDERS_FILLED, C_ORDERS_REJECTED, C_RECONCILE_FILLS, C_RECONCILE_MISMATCH,
    EXEC_CANCELED, MSG_CANCEL, MSG_ORDER, ORDER_SLOT_BITS,
)
from kernels.pipeline import apply_reports
from kernels.venue import venue_cancel
from wire.frames import encode_frame, iter_frames
from wire.schema import Cancel, StatusRequest

log = logging.getLogger("orchestrator.engine")
# The cursor cells _drain reads and writes, as flat indexes of the (ring, HEAD/TAIL) table; it reads the cells of
# the orders, rejects, reports and fills rings (adjacent, in that order) with one struct unpack (~0.14 us, against
# ~0.35 us for six numpy item reads).
_ORDERS_TAIL, _REJECTS_TAIL, _FILLS_TAIL = (2 * ring + rings.TAIL for ring in (RING_ORDERS, RING_REJECTS, RING_FILLS))
assert (RING_REJECTS, RING_REPORTS, RING_FILLS) == (RING_ORDERS + 1, RING_ORDERS + 2, RING_ORDERS + 3)
assert (rings.HEAD, rings.TAIL) == (0, 1)
_OUTBOUND_CURSORS = struct.Struct("=8Q")
_OUTBOUND_OFFSET = 2 * RING_ORDERS * 8


class EngineStats:
    """Python-side facts the kernels cannot see: what happened at the OMS link."""

    def __init__(self):
        self.batches = 0
        self.oms_sends = 0
        self.oms_backpressure = 0
        self.oms_disconnects = 0
        self.orders_sent = 0    # orders the OMS link took (less those it gave back unsent when a connection ended)
        self.orders_unsent = 0  # orders that never reached the OMS; each is canceled in the engine's books
        self.cancels_sent = 0   # cancel requests that went to the OMS link (kill switches)
        self.reconciliations = 0  # times the engine asked the OMS for the status of its working orders
        self.status_requests = 0  # StatusRequest frames that went to the OMS link
        self.oms_given_up = 0   # times the watched link was treated as lost (unacknowledged orders, refused tx)
        self.journal_failures = 0  # commits the disk refused (see EngineJournal's policy)

    def as_dict(self):
        return dict(vars(self))


class Engine:
    """One engine process's state and its batch step. Not thread-safe: one driver calls it.

    `oms` is the OMS link's transport, or None when the simulated venue runs inside the batch ([oms] kind
    "sim"): orders then never leave the arena, and the venue's reports are applied in stream time.
    `journal` (engine/journal.py EngineJournal) records every arrival and command; `control` applies commands
    between batches (engine/control.py)."""

    def __init__(self, state, inbound, oms, *, on_disconnect="halt", clock=time.time_ns, listeners=(),
                 backoff_ms=(100, 5000), journal=None, watch_ms=(2000, 8, 2000), on_mismatch="report"):
        self.state = state
        self.inbound = list(inbound)
        self.oms = oms
        self.on_disconnect = on_disconnect
        self.clock = clock
        self.listeners = list(listeners)  # each gets on_batch(orders, rejects, fills, now_ns) with ring views
        self.housekeepers = []  # each gets maintain(now_ns, engine) between steps (metrics, alerts, quality)
        self.stats = EngineStats()
        # chunks decided per batch: batch_chunks[b] counts the batches of 2**(b-1) .. 2**b - 1 chunks (b = 0: none)
        self.batch_chunks = [0] * (len(state.rx_sizes).bit_length() + 1)
        self.batch_chunks_sum = 0
        self._batch = entry_point(run_batch)
        self._apply_reports = entry_point(apply_reports)
        self._carry_over = entry_point(carry_over)
        self._venue_cancel = entry_point(venue_cancel)
        self._load_arrivals = entry_point(load_arrivals)
        self._load_result = np.zeros(3, np.int64)
        self._slot_mask = (1 << ORDER_SLOT_BITS) - 1
        self._arena, self._layout = state.arena, state.layout
        self._scalars = state.scalars
        self._cursors = state.cursors
        self._cursor_cells = state.cursors.reshape(-1)  # flat: one index per (ring, HEAD/TAIL), no tuple per access
        assert self._cursor_cells.shape == (2 * N_RINGS,) and np.shares_memory(self._cursor_cells, state.cursors)
        assert state.cursors.dtype == np.uint64 and state.cursors.flags.c_contiguous
        self._cursor_bytes = memoryview(state.cursors).cast("B")
        self._rx, self._rx_sizes, self._rx_times, self._rx_sources = \
            state.rx, state.rx_sizes, state.rx_times, state.rx_sources
        self._rx_slots = len(state.rx_sizes)
        self._tx = memoryview(state.tx)  # a slice of it is what the OMS link sends: no numpy view per send
        # where each chunk came from: 0 the OMS link, 1.. the listeners in order (rx_sources)
        self.sources = ([] if oms is None else [(oms, SOURCE_OMS)]) + [
            (t, FIRST_LISTENER + k) for k, t in enumerate(self.inbound)]
        self._offset = 0
        self._chunks = 0
        self._oms_up = True
        self.journal = journal
        self.snapshots = None  # engine/snapshot.py Snapshotter: taken in maintain(), between steps
        self.order_ids = None  # engine/order_ids.py OrderIds: generations reserved ahead in maintain()
        self.mirror = None     # engine/mirror.py MirrorFeed ([redis]): fed in maintain(), between steps
        self.control = Control(self, journal)
        self.wake = lambda: None  # the driver's: run a step soon (a command was queued from another thread)
        self.reads = deque()  # (fn, Future): reads of the state asked for by other threads, served between steps
        self._requests = bytearray()  # Cancel and StatusRequest frames for the OMS link, sent after the commit
        self.on_mismatch = on_mismatch
        self._mismatches = int(state.counters[C_RECONCILE_MISMATCH])  # acted on up to here (recovered ones too)
        self._journal_halted = False
        self.backoff_ns = (backoff_ms[0] * 1_000_000, backoff_ms[1] * 1_000_000)
        self._backoff_ns = self.backoff_ns[0]
        self._next_connect_ns = 0
        self.links = 0  # one more each time the OMS link goes down or comes back (its descriptor changes)
        # the watched link: (ack timeout, unacknowledged orders tolerated, how long tx may stay refused)
        self.ack_timeout_ns, self.max_unacked, self.stall_ns = watch_ms[0] * 1_000_000, watch_ms[1], \
            watch_ms[2] * 1_000_000
        self._stuck_since = 0    # since when orders wait for the OMS link with no byte written (0: none)
        self._written = 0        # bytes the link had written at the last watch
        self._up_since = 0        # when the link last came up: orders from before are not this connection's
        self._watched_ns = 0      # when the order table was last scanned for late acknowledgements
        self.unacked = 0          # orders past the ack timeout at the last watch
        self.down_reason = None

    # ------------------------------------------------------------------------------------------ the step
    def poll(self):
        """Read what every transport has into rx after what is already waiting; return the chunks waiting. The
        OMS link is read first: its reports then come before the signals read in the same round."""
        for transport, source in self.sources:
            self.poll_one(transport, source)
        return self._chunks

    def poll_one(self, transport, source, ready=False):
        """Read one transport (`ready`: its descriptor was just seen readable, so `poll_ready`); return the chunks
        waiting in rx. A lost OMS link applies its policy; any other transport's loss is raised."""
        first = self._chunks
        room = self._rx_slots - first
        if room <= 0:
            return first
        start = self._offset
        try:
            if ready:
                n, end = transport.poll_ready(self._rx, start, self._rx_sizes, first, room)
            else:
                n, end = transport.poll(self._rx, start, self._rx_sizes, first, room)
        except TransportClosed:
            if transport is not self.oms:
                raise
            self.oms_down()
            return first
        if n:
            self._offset = end
            self._arrived(first, n, self.clock(), source, start, end)
        return self._chunks

    def _arrived(self, first, n, now, source, start, end):
        """Chunks first..first+n are in rx[start:end]: stamp them with their arrival time and source; journal them
        before any batch decides them."""
        if n == 1:
            self._rx_times[first] = now
            self._rx_sources[first] = source
        else:
            self._rx_times[first:first + n] = now
            self._rx_sources[first:first + n] = source
        if self.journal is not None:
            self.journal.arrival(now, source, self._rx, start, end, self._rx_sizes, first, n)
        self._chunks = first + n

    def pending_input(self):
        """(chunks, bytes) arrived and not yet decided: what a batch stopped by back-pressure left in rx."""
        return self._chunks, self._offset

    def step(self, now_ns=None):
        """Apply the queued commands; decide what poll() gathered (with nothing gathered: a tick, stream time
        moving on, so cool-downs and the venue's due reports happen); return how many orders were placed.

        A batch that stops for room in its outbound rings is run again once they are drained (and tx sent), until
        everything is decided or the OMS link cannot take more orders: so what waits in rx between steps waits
        only for the OMS, always before a signal, and a command then applies at a point a replay can find."""
        now = self.clock() if now_ns is None else now_ns
        if self.control.pending:
            self.control.apply_pending(now)
        if self._chunks == 0:
            self._rx_sizes[0] = 0
            self._arrived(0, 1, now, SOURCE_OMS, 0, 0)
        return self._run_batches(now)

    def _run_batches(self, now):
        placed = 0
        while True:
            chunks = self._chunks
            placed += self._batch(self._arena, self._layout, chunks)
            self.stats.batches += 1
            self.batch_chunks[chunks.bit_length()] += 1
            self.batch_chunks_sum += chunks
            stop_chunk = self._scalars.item(S_STOP_CHUNK)
            stopped = stop_chunk < chunks
            stuck = stopped and stop_chunk == 0 and self._scalars.item(S_STOP_POS) == 0  # took nothing at all
            if stopped:  # back-pressure: what the batch did not take goes first next time
                self._chunks = self._carry_over(self._arena, self._layout, chunks)
                self._offset = int(self._rx_sizes[:self._chunks].sum())
            else:
                self._offset = self._chunks = 0
            self._flush(now)
            if not stopped or stuck or self._scalars.item(S_TX_LEN):  # done, or the OMS link holds the rest back
                return placed

    # ------------------------------------------------------------------------------------------ reads
    def read(self, fn) -> Future:
        """Run fn() between two steps on the spin driver's thread; the Future holds what it returns. How a thread
        beside the spin driver (its REST API) reads the arena without racing a batch. (The event driver's loop
        serves its API's reads itself, between callbacks.)"""
        future = Future()
        self.reads.append((fn, future))
        return future

    def serve_reads(self):
        while self.reads:
            fn, future = self.reads.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # the asker gave up
            try:
                future.set_result(fn())
            except Exception as e:  # the asker hears of it; the engine goes on
                future.set_exception(e)

    # ------------------------------------------------------------------------------------------ replaying
    def feed(self, time_ns, source, sizes, data):
        """Replays: put journaled chunks in rx as a poll would have (deciding what waits first if they do not
        fit), stamped with their recorded arrival time and source."""
        state = self.state
        if self._chunks + len(sizes) > len(state.rx_sizes) or self._offset + len(data) > len(state.rx):
            self._run_batches(time_ns)
        first, n = self._chunks, len(sizes)
        state.rx[self._offset:self._offset + len(data)] = memoryview(data)
        state.rx_sizes[first:first + n] = sizes
        state.rx_times[first:first + n] = time_ns
        state.rx_sources[first:first + n] = source
        self._chunks, self._offset = first + n, self._offset + len(data)

    def feed_records(self, data, offsets, i, count):
        """Replays, fast: put the journaled arrival records at offsets[i:count] of a checked segment (adapters/
        journal.py Scanned) into rx, one compiled call, as many as fit before a record that is not an arrival;
        return (records put, the last one's time). 0 records: rx is full for the next one, or it is a command."""
        result = self._load_result
        result[LOAD_CHUNKS], result[LOAD_BYTES] = self._chunks, self._offset
        loaded = self._load_arrivals(data, offsets, i, count, self._rx, self._rx_sizes, self._rx_times,
                                     self._rx_sources, result)
        self._chunks, self._offset = int(result[LOAD_CHUNKS]), int(result[LOAD_BYTES])
        return loaded, int(result[LOAD_TIME])

    def decide(self, now, keep_chunks=0, keep_bytes=0):
        """Replays: decide what waits in rx except its last `keep_chunks` chunks' last `keep_bytes` bytes (what a
        live batch had left undecided when a command was applied: those stay in rx, first in line)."""
        state = self.state
        n, total = self._chunks, self._offset
        if keep_chunks == 0:
            if n:
                self._run_batches(now)
            return
        j = n - keep_chunks  # the first chunk held back, whole or in part
        later = int(state.rx_sizes[j + 1:n].sum())
        decided_part = int(state.rx_sizes[j]) - (keep_bytes - later)
        kept = slice(j, n)
        held = (state.rx[total - keep_bytes:total].copy(), state.rx_sizes[kept].copy(), state.rx_times[kept].copy(),
                state.rx_sources[kept].copy())
        held[1][0] -= decided_part
        self._chunks, self._offset = (j + 1 if decided_part else j), total - keep_bytes
        state.rx_sizes[j] = decided_part
        if self._chunks:
            self._run_batches(now)
        data, sizes, times, sources = held
        state.rx[:len(data)] = data
        state.rx_sizes[:keep_chunks], state.rx_times[:keep_chunks], state.rx_sources[:keep_chunks] = \
            sizes, times, sources
        self._chunks, self._offset = keep_chunks, len(data)

    def _flush(self, now):
        """After a batch: commit the journal, then send the orders and cancels, then hand out the outbound rings."""
        sendable = self.journal is None or self._commit(now)
        if self._scalars.item(S_TX_LEN):
            if sendable:
                self._send(now)
            else:
                self._cancel_tx(now)
        if self._requests and sendable:
            self._send_requests()
        self._drain(now)

    def _commit(self, now):
        """Write the step's journal records before anything leaves. When the disk refuses: policy "alarm" goes
        on (the records wait in memory, retried every step); "halt" halts every strategy (once per outage, as a
        journaled command, so it is on disk when the journal is) and sends nothing it cannot journal."""
        if self.journal.commit():
            self._journal_halted = False
            return True
        self.stats.journal_failures += 1
        if self.journal.on_error == "alarm":
            return True
        if not self._journal_halted:
            self._journal_halted = True
            self.control.apply(HaltAll(actor="engine", policy="halt", reason="the journal cannot be written"), now)
        return False

    def venue_due_ns(self):
        """When the in-batch venue's next report is due (None: nothing pending, or no venue here)."""
        venue = self.state.venue[0]
        return int(self.state.venue_events[0]["due_ns"]) if venue["on"] and venue["pending"] else None

    def _send(self, now):
        scalars = self._scalars
        frames = self._tx[:scalars.item(S_TX_LEN)]
        try:
            sent = self._oms_up and self.oms.send(frames)
        except TransportClosed:
            self.oms_down(now)
            sent = False
        if sent:
            self.stats.orders_sent += len(frames) // ORDER_FRAME_SIZE  # tx holds Order frames only
            scalars[S_TX_LEN] = 0
            self.stats.oms_sends += 1
        elif self._oms_up:
            self.stats.oms_backpressure += 1  # frames stay in tx; the next batch places fewer orders
        else:
            self._cancel_tx(now)

    def _cancel_tx(self, now):
        """The orders encoded in tx will never be sent (the OMS link is gone, the journal cannot be written):
        cancel each in the engine's books."""
        frames = bytes(self.state.tx[:self._scalars.item(S_TX_LEN)])
        self._scalars[S_TX_LEN] = 0
        self._cancel_unsent(frames, now)

    def _cancel_unsent(self, frames, now, taken=False):
        """Cancel in the books the orders of whole frames that never reached the OMS (tx, or what the link held
        when its connection ended: `taken`, counted sent until now), as a journaled command."""
        order_ids = [order.order_id for msg_type, order in iter_frames(frames) if msg_type == MSG_ORDER]
        if order_ids:
            self.control.apply(CancelUnsent(actor="engine", order_ids=order_ids), now)
            self.stats.orders_unsent += len(order_ids)
            if taken:
                self.stats.orders_sent -= len(order_ids)

    def _send_requests(self):
        if not self._oms_up:
            return  # the orders' fate is the OMS's now: reconciliation asks when the link is back
        try:
            sent = self.oms.send(self._requests)
        except TransportClosed:
            self.oms_down(self.clock())
            return
        if sent:
            for msg_type, _ in iter_frames(bytes(self._requests)):
                if msg_type == MSG_CANCEL:
                    self.stats.cancels_sent += 1
                else:
                    self.stats.status_requests += 1
            self._requests.clear()

    def reconcile(self, now):
        """Ask the OMS how it sees every order working in the books (after a reconnect, and at start with a
        recovered state): each answer, an EXEC_STATUS report, is applied by the batch like any report (missed
        fills applied and flagged, orders the OMS no longer works released, differences counted)."""
        o = self.state.open_orders
        for slot in (o["live"] != 0).nonzero()[0]:
            order = o[slot]
            self._requests += encode_frame(StatusRequest(order_id=int(order["order_id"]),
                                                         strategy=int(order["strategy"]),
                                                         deploy=int(order["deploy"]), ts_ns=now))
        self.stats.reconciliations += 1

    def _act_on_mismatches(self, now):
        """New reconciliation differences: logged, and with on_mismatch = "reduce" every trading strategy goes
        reduce-only (a journaled command) until an operator has looked."""
        seen = int(self.state.counters[C_RECONCILE_MISMATCH])
        if seen == self._mismatches:
            return
        new, self._mismatches = seen - self._mismatches, seen
        log.error("reconciliation: %d orders differ from the OMS's view (%d missed fills applied, flagged)", new,
                  int(self.state.counters[C_RECONCILE_FILLS]))
        if self.on_mismatch == "reduce":
            self.control.apply(HaltAll(actor="engine", policy="reduce",
                                       reason=f"reconciliation: {new} orders differ from the OMS"), now)

    def request_cancel(self, slot, now, live):
        """Ask for the working order in `slot` to be canceled (a kill switch): the in-batch venue takes it at
        once; an OMS link gets a Cancel frame after the journal commit (`live`: not when replaying)."""
        if self.oms is None:
            self._venue_cancel(self._arena, self._layout, slot, now)
        elif live:
            o = self.state.open_orders[slot]
            self._requests += encode_frame(Cancel(order_id=int(o["order_id"]), strategy=int(o["strategy"]),
                                                  deploy=int(o["deploy"]), ts_ns=now))

    def cancel_locally(self, order_ids, now):
        """CANCELED reports for `order_ids`, applied to the books at `now` (orders that never reached the OMS);
        return how many the books knew. A ring at a time: any number of orders fits any ring size."""
        reports, cursors = self.state.reports, self.state.cursors
        before = int(self.state.strategies["open_orders"].sum())
        for order_id in order_ids:
            index = rings.claim(cursors, RING_REPORTS, len(reports))
            if index == rings.NO_ROOM:
                self._apply_reports(self._arena, self._layout, now)
                index = rings.claim(cursors, RING_REPORTS, len(reports))
            slot = order_id & self._slot_mask
            o = self.state.open_orders[slot] if slot < len(self.state.open_orders) else None
            rec = reports[index]
            rec["order_id"] = order_id
            rec["strategy"], rec["deploy"] = (int(o["strategy"]), int(o["deploy"])) if o is not None else (0, 0)
            rec["exec_type"], rec["qty"], rec["price"], rec["leaves"] = EXEC_CANCELED, 0, 0.0, 0
            rec["fee"], rec["ts_ns"], rec["reason"] = 0.0, now, 0
            rings.publish(cursors, RING_REPORTS)
        self._apply_reports(self._arena, self._layout, now)
        return before - int(self.state.strategies["open_orders"].sum())

    def _drain(self, now):
        """Hand the batch's new orders, rejects and fills to the listeners, then release them from their rings."""
        orders_head, orders_tail, rejects_head, rejects_tail, _, _, fills_head, fills_tail = \
            _OUTBOUND_CURSORS.unpack_from(self._cursor_bytes, _OUTBOUND_OFFSET)
        if orders_tail == orders_head and rejects_tail == rejects_head and fills_tail == fills_head:
            return
        state = self.state
        orders = rings.slices(state.orders, orders_tail, orders_head)
        rejects = rings.slices(state.rejects, rejects_tail, rejects_head)
        fills = rings.slices(state.fills, fills_tail, fills_head)
        for listener in self.listeners:
            listener.on_batch(orders, rejects, fills, now)
        cells = self._cursor_cells  # each ring's tail set to its head: rings.release, one cell at a time
        if orders:
            cells[_ORDERS_TAIL] = orders_head
        if rejects:
            cells[_REJECTS_TAIL] = rejects_head
        if fills:
            cells[_FILLS_TAIL] = fills_head

    # ------------------------------------------------------------------------------------------ OMS link policy
    def oms_down(self, now=None, reason="OMS link lost"):
        """The OMS link is gone (or given up on): apply the disconnect policy once (a journaled command), and start
        reconnecting with backoff."""
        if not self._oms_up:
            return
        now = self.clock() if now is None else now
        self._oms_up = False
        self.links += 1
        self.down_reason = reason
        self._stuck_since = 0
        self._next_connect_ns = now + self._backoff_ns
        self.stats.oms_disconnects += 1
        result = self.control.apply(HaltAll(actor="engine", policy=self.on_disconnect, reason=reason), now)
        log.error("%s: %d strategies moved by policy %r; orders not sent are canceled locally", reason,
                  len(result.detail.get("moved", ())), self.on_disconnect)
        if hasattr(self.oms, "take_unsent"):  # what the link held when the connection ended
            self._cancel_unsent(self.oms.take_unsent(), now, taken=True)

    def watch_link(self, now):
        """Give up on an OMS link that takes orders and answers nothing, or takes nothing: too many orders past
        the ack timeout, or orders waiting (in tx or held by the link) with no byte written for stall_ms.
        Between batches."""
        if self.oms is None or not self._oms_up:
            return
        written = self.oms.stats.bytes_out
        if not getattr(self.oms, "pending_bytes", 0) and not self._scalars.item(S_TX_LEN) or \
                written != self._written:
            self._stuck_since = 0
        elif not self._stuck_since:
            self._stuck_since = now
        self._written = written
        # the order table scan (~0.2 ms at 65k rows) runs a few times per ack timeout, and only when enough
        # orders are working to go past the threshold at all
        if int(self.state.strategies["open_orders"].sum()) <= self.max_unacked:
            self.unacked = 0  # cannot be more: no stale count from an earlier scan in the report
        elif now - self._watched_ns >= self.ack_timeout_ns // 4:
            self._watched_ns = now
            o = self.state.open_orders
            late = (o["live"] != 0) & (o["acked"] == 0) & (o["ts_ns"] >= self._up_since) & \
                (o["ts_ns"] < now - self.ack_timeout_ns)
            self.unacked = int(late.sum())
        if self.unacked > self.max_unacked:
            why = (f"OMS link given up: {self.unacked} orders unacknowledged after {self.ack_timeout_ns // 1_000_000} "
                   f"ms (more than max_unacked = {self.max_unacked})")
        elif self._stuck_since and now - self._stuck_since > self.stall_ns:
            why = f"OMS link given up: it has taken no orders for {(now - self._stuck_since) // 1_000_000} ms"
        else:
            return
        self.stats.oms_given_up += 1
        self.unacked = 0
        if hasattr(self.oms, "disconnect"):
            self.oms.disconnect()
        self.oms_down(now, why)
        self._cancel_tx(now)  # what it never took will not go: canceled in the books

    def finish(self, timeout_s=1.0):
        """The run ends: give the OMS link up to timeout_s to take the orders still waiting in tx, then cancel
        what it did not take in the books (counted unsent), so no order ends the run neither sent nor canceled."""
        if self.oms is None:
            return  # the in-batch venue took every order in the batch
        deadline = time.monotonic() + timeout_s

        def waiting():
            return self._scalars.item(S_TX_LEN) or getattr(self.oms, "pending_bytes", 0)
        while waiting() and self._oms_up and time.monotonic() < deadline:
            try:
                if self._scalars.item(S_TX_LEN):
                    self._send(self.clock())
                else:
                    self.oms.flush()
            except TransportClosed:
                self.oms_down(self.clock())
            time.sleep(0.001)
        if getattr(self.oms, "pending_bytes", 0) and hasattr(self.oms, "disconnect"):
            self.oms.disconnect()  # the held frames go nowhere once the process ends
            self._cancel_unsent(self.oms.take_unsent(), self.clock(), taken=True)
        if self._scalars.item(S_TX_LEN):
            self._cancel_tx(self.clock())

    def order_fates(self):
        """Every order the engine placed, by what became of it (the counts add up to `placed`)."""
        c, o = self.state.counters, self.state.open_orders
        open_ = o["live"] != 0
        return {"placed": int(c[C_ORDERS]), "filled": int(c[C_ORDERS_FILLED]), "canceled": int(c[C_ORDERS_CANCELED]),
                "rejected": int(c[C_ORDERS_REJECTED]), "working": int((open_ & (o["acked"] != 0)).sum()),
                "unacknowledged": int((open_ & (o["acked"] == 0)).sum()),
                "unsent": self.stats.orders_unsent}

    @property
    def oms_up(self):
        return self._oms_up

    def maintain(self, now_ns):
        """Housekeeping between batches: a snapshot when one is due, order ids reserved ahead, the Redis mirror fed,
        the OMS link watched, a lost one reconnected with backoff."""
        if self.snapshots is not None:
            self.snapshots.maybe_take(self, now_ns)
        if self.order_ids is not None:
            self.order_ids.maintain(self._scalars)
        if self.mirror is not None:
            self.mirror.housekeeping(now_ns)
        self._act_on_mismatches(now_ns)
        self.watch_link(now_ns)
        for keeper in self.housekeepers:
            keeper.maintain(now_ns, self)
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
            self.links += 1
            self._up_since = now_ns
            self._backoff_ns = self.backoff_ns[0]
            self.reconcile(now_ns)
            log.warning("OMS connection restored; strategies stay %s until an operator activates them",
                        "halted" if self.on_disconnect == "halt" else "reduce-only")
        # else the attempt is under way: look again at the next housekeeping, not after a backoff


def warm_up(engine):
    """Run one empty batch so every compiled path and arena page is touched before the first real signal."""
    engine.step()


# ---------------------------------------------------------------------------------------------- drivers
HEARTBEAT_NS = 20_000_000  # an idle engine still runs a batch this often: cool-downs, reconnects


def run_spin(engine, stop, cpu=None):
    """Spin mode: busy-poll on one (optionally pinned) core until `stop` (a threading.Event) is set.

    A pass: one epoll_wait(0) over every transport's descriptor (engine/wait.py), a read of each ready one (the OMS
    link first) and of each transport without a descriptor (Aeron); a step when anything is waiting in rx or a
    command is queued, when the in-batch venue has a report due, or when no step ran for HEARTBEAT_NS (that one
    after a read of every transport, each asking its own readiness, so nothing is missed for long); then the reads
    other threads asked for (`Engine.read`: the REST API's), and `Engine.maintain` (snapshots, reconnects) every
    HEARTBEAT_NS, busy or not, followed by a new look at the transports' descriptors.
    The garbage collector is frozen and paused while spinning: a collection is a latency spike, and the steady
    state allocates nothing that lives past one pass."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    clock, control, read = engine.clock, engine.control, engine.poll_one
    venue = bool(engine.state.venue[0]["on"])
    readiness = Readiness(engine.sources, skip=lambda transport: transport is engine.oms and not engine.oms_up)

    def maintain(now):
        engine.maintain(now)
        readiness.sync()  # a reconnected OMS link has a new descriptor
        return now + HEARTBEAT_NS

    gc.collect()
    gc.freeze()
    gc.disable()
    reads = engine.reads
    try:
        now = last_step = clock()
        next_maintain = now + HEARTBEAT_NS
        venue_due = engine.venue_due_ns() if venue else None
        waiting = engine.pending_input()[0]  # chunks in rx: a batch the OMS link held back leaves some
        links = engine.links
        ready, is_set = readiness.ready, stop.is_set
        while not is_set():
            for transport, source in ready():
                waiting = read(transport, source, True)
            for transport, source in readiness.always:
                waiting = read(transport, source)
            if engine.links != links:  # the OMS link went down or came back (a read, a step): a new descriptor
                links = engine.links
                readiness.sync()
            now = clock()
            if waiting or control.pending:
                engine.step()
            elif now - last_step >= HEARTBEAT_NS:
                engine.poll()
                engine.step()
            elif venue_due is not None and now >= venue_due:
                engine.step(now)
            else:
                if reads:
                    engine.serve_reads()
                if now >= next_maintain:
                    next_maintain = maintain(now)
                continue
            last_step = now
            waiting = engine.pending_input()[0]
            if venue:
                venue_due = engine.venue_due_ns()
            if reads:
                engine.serve_reads()
            if now >= next_maintain:
                next_maintain = maintain(clock())
        engine.poll()
        engine.step()
        engine.serve_reads()
    finally:
        gc.enable()
        gc.unfreeze()
        readiness.close()


async def run_event(engine, stop, coalesce=False):
    """Event mode: the event loop (uvloop) wakes on a transport's readiness, and that transport's callback reads it
    and runs the batch at once, until `stop` (an asyncio.Event) is set.

    No call_soon hop and no second read of everything: what one read of one transport brought (every datagram
    queued on a UDP socket, a TCP read's whole frames, an Aeron poll's messages) is one batch, decided in the
    callback. `coalesce` keeps the older way for comparison: each callback reads its transport into rx and one
    batch runs after every ready callback of the loop iteration (call_soon), so frames that arrived on several
    transports in one iteration share a batch, at the price of a hop through the loop's ready queue.
    A heartbeat (a loop timer, every HEARTBEAT_NS) runs housekeeping (`Engine.maintain`), reads every transport
    and runs a batch, so cool-downs run and a link's loss is seen; a timer runs a batch when the in-batch venue's
    next report is due; `engine.wake` (called from any thread when a command is queued) runs a step soon through
    call_soon_threadsafe. The garbage collector is frozen and paused while the loop runs, as in spin mode."""
    loop = asyncio.get_running_loop()
    read, step = engine.poll_one, engine.step
    venue = bool(engine.state.venue[0]["on"])
    timers = {"venue": None, "heartbeat": None}
    scheduled = False

    def after_step():
        if venue and timers["venue"] is None:
            due = engine.venue_due_ns()
            if due is not None:
                timers["venue"] = loop.call_later(max(0, due - engine.clock()) / 1e9, venue_tick)

    def venue_tick():
        timers["venue"] = None
        step()
        after_step()

    def batch():
        nonlocal scheduled
        scheduled = False
        step()
        after_step()

    def reader(transport, source):
        if coalesce:
            def on_readable():
                nonlocal scheduled
                read(transport, source, True)
                if not scheduled:
                    scheduled = True
                    loop.call_soon(batch)
        else:
            def on_readable():
                if read(transport, source, True):
                    step()
                    after_step()
        return on_readable

    def heartbeat():
        timers["heartbeat"] = loop.call_later(HEARTBEAT_NS / 1e9, heartbeat)
        engine.maintain(engine.clock())
        engine.poll()
        step()
        after_step()

    for transport, source in engine.sources:
        transport.attach(loop, reader(transport, source))
    engine.wake = lambda: loop.call_soon_threadsafe(batch)  # a command queued: apply it at once
    timers["heartbeat"] = loop.call_later(HEARTBEAT_NS / 1e9, heartbeat)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        await stop.wait()
    finally:
        gc.enable()
        gc.unfreeze()
        engine.wake = lambda: None
        for transport, _ in engine.sources:
            transport.detach()
        for timer in timers.values():
            if timer is not None:
                timer.cancel()
    engine.poll()
    engine.step()
