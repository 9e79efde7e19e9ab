"""The whole batch in one compiled call: the frames of rx, IN ARRIVAL ORDER, each decided as it is read.

Chunk k of rx (rx_sizes[k] bytes: a datagram, the whole frames of a read, an empty tick) arrived at rx_times[k]:
stream time moves there (due venue reports are applied, cool-downs run), then its frames are walked one by one:
a signal is decoded into its ring and turned into orders at once, market data moves its instrument's mark and
everything marked by it, an execution report is applied. So every event sees exactly the market and the fills
that came before it, and any split of a stream into batches decides the same (a property test holds it).
Each frame keeps to its chunk's source's role (kernels/arena.py SOURCE_OMS): execution reports only on the OMS
link (none at all while the simulated venue runs here: it makes its own), signals and market data only on the
listeners; a frame off its role is counted (per source in role_drops) and dropped.

Back-pressure stops the walk, never an overwrite or a drop: before a signal the order and reject rings (and, when
orders go to an OMS link, tx) must have room for the most subscribers a signal has (S_MAX_FANOUT); before a
report, and before each venue report, the fills ring must have room for one fill. The batch then stops at that
event (S_STOP_CHUNK and S_STOP_POS say where), and `carry_over` moves the rest of rx to its front for the next
batch to take first: nothing is decided twice, nothing skipped.
"""
import numpy as np
from numba import types

from kernels._jit import kernel
from kernels.arena import (
    ARENA, LAYOUT, MAX_SOURCES, RING_FILLS, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_SIGNALS, ROLE_DATA_ON_OMS,
    ROLE_REPORT_OFF_OMS, SOURCE_OMS, S_MAX_FANOUT, S_STOP_CHUNK, S_STOP_POS, S_TX_LEN, views,
)
from kernels.codec import (
    HEADER_OK, ORDER_FRAME_SIZE, encode_to_tx, read_header, take_market_data, take_report, take_signal,
)
from kernels.dtypes import (
    C_BATCH_STOPS, C_FRAMES, C_FRAME_BAD_TYPE, C_ROLE_DATA_ON_OMS, C_ROLE_REPORT_OFF_OMS, FRAME_HEADER_SIZE,
    MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_SIGNAL,
)
from kernels.pipeline import apply_report, on_mark, on_signal, release_due, set_clock
from kernels.rings import head, release, room


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def run_batch(arena, layout, n_chunks):
    """Decide the events of rx's first n_chunks chunks in arrival order; append the new orders' frames to tx
    (unless the simulated venue takes them in this call). Return the orders placed."""
    state = views(arena, layout)
    rx, rx_sizes, rx_times, rx_sources = state.rx, state.rx_sizes, state.rx_times, state.rx_sources
    scalars, cursors, counters = state.scalars, state.cursors, state.counters
    to_venue = state.venue[0]["on"] != 0
    first = head(cursors, RING_ORDERS)
    tx_budget = (len(state.tx) - scalars[S_TX_LEN]) // ORDER_FRAME_SIZE  # order frames tx can still take
    fanout = scalars[S_MAX_FANOUT]
    placed = 0
    n = min(n_chunks, len(rx_sizes))
    stop_chunk, stop_pos = n, 0
    start = 0
    for k in range(n):
        size = max(rx_sizes[k], 0)
        end = min(start + size, len(rx))
        if not release_due(state, rx_times[k]):
            stop_chunk, stop_pos = k, start
            break
        now = set_clock(state, rx_times[k])
        source = np.int64(rx_sources[k])
        on_oms_link = source == SOURCE_OMS and not to_venue  # the in-batch venue's reports come from the venue
        pos = start
        blocked = False
        while pos < end:
            status, msg_type, frame_end = read_header(rx, pos, end)
            if status != HEADER_OK:
                counters[status] += 1
                break
            if (msg_type == MSG_EXECUTION_REPORT or msg_type == MSG_SIGNAL or msg_type == MSG_MARKET_DATA) and \
                    (msg_type == MSG_EXECUTION_REPORT) != on_oms_link:  # off its role: only the OMS moves positions
                cause = ROLE_REPORT_OFF_OMS if msg_type == MSG_EXECUTION_REPORT else ROLE_DATA_ON_OMS
                counters[C_ROLE_REPORT_OFF_OMS if cause == ROLE_REPORT_OFF_OMS else C_ROLE_DATA_ON_OMS] += 1
                state.role_drops[min(source, MAX_SOURCES - 1), cause] += 1
                counters[C_FRAMES] += 1
                pos = frame_end
                continue
            if msg_type == MSG_SIGNAL:
                if room(cursors, RING_ORDERS, len(state.orders)) < fanout or \
                        room(cursors, RING_REJECTS, len(state.rejects)) < fanout or \
                        (not to_venue and tx_budget - placed < fanout):
                    blocked = True
                    break
            elif msg_type == MSG_EXECUTION_REPORT:
                if room(cursors, RING_FILLS, len(state.fills)) < 1:
                    blocked = True
                    break
            counters[C_FRAMES] += 1
            body = pos + FRAME_HEADER_SIZE
            if msg_type == MSG_SIGNAL:
                slot = take_signal(rx, body, frame_end, now, state.signals, cursors, counters)
                if slot >= 0:
                    placed += on_signal(state, state.signals[slot], now)
                    release(cursors, RING_SIGNALS, head(cursors, RING_SIGNALS))
            elif msg_type == MSG_MARKET_DATA:
                instrument = take_market_data(rx, body, frame_end, state.instruments, counters)
                if instrument >= 0:
                    on_mark(state, instrument, now)
            elif msg_type == MSG_EXECUTION_REPORT:
                slot = take_report(rx, body, frame_end, state.reports, cursors, counters)
                if slot >= 0:
                    apply_report(state, state.reports[slot], now)
                    release(cursors, RING_REPORTS, head(cursors, RING_REPORTS))
            else:  # an Order goes out, never in
                counters[C_FRAME_BAD_TYPE] += 1
            pos = frame_end
            if to_venue and not release_due(state, now):  # what the venue filled at once, before the next event
                blocked = True
                break
        if blocked:
            stop_chunk, stop_pos = k, pos
            break
        start += size
    if stop_chunk < n:
        counters[C_BATCH_STOPS] += 1
    scalars[S_STOP_CHUNK] = stop_chunk
    scalars[S_STOP_POS] = stop_pos
    if not to_venue:
        encode_to_tx(state, first, first + placed)
    return placed


@kernel(types.int64(ARENA, LAYOUT, types.int64))
def carry_over(arena, layout, n_chunks):
    """After a batch that stopped (S_STOP_CHUNK < n_chunks): move what it did not take to the front of rx, in
    order, chunk lengths, arrival times and sources with it (the stopped chunk keeps only its rest); return how
    many chunks wait now. The next batch takes them first."""
    state = views(arena, layout)
    rx, sizes, times, sources = state.rx, state.rx_sizes, state.rx_times, state.rx_sources
    chunk, pos = state.scalars[S_STOP_CHUNK], state.scalars[S_STOP_POS]
    if chunk >= n_chunks:
        return 0
    start = 0
    for k in range(chunk):
        start += sizes[k]
    end = start
    for k in range(chunk, n_chunks):
        end += sizes[k]
    for b in range(pos, end):  # forward, never overlapping the bytes still to read
        rx[b - pos] = rx[b]
    n = n_chunks - chunk
    for k in range(n):
        sizes[k] = sizes[chunk + k]
        times[k] = times[chunk + k]
        sources[k] = sources[chunk + k]
    sizes[0] -= pos - start
    return n
