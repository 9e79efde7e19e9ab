"""The whole batch in one compiled call: inbound frames -> reports applied -> marks -> orders -> order frames.

Order of work inside a batch: execution reports first (they release open quantity and move positions), then
the marks that market data moved, then signals, so every signal is checked against the freshest state the
batch has.
"""
import numpy as np
from numba import types

from kernels._jit import inlined, kernel
from kernels.arena import HEAD, RING_ORDERS, S_TX_LEN, views
from kernels.codec import ORDER_FRAME_SIZE, decode_inbound, encode_orders
from kernels.pipeline import apply_reports, process_batch

_decode_inbound = inlined(decode_inbound)
_apply_reports = inlined(apply_reports)
_process_batch = inlined(process_batch)
_encode_orders = inlined(encode_orders)


@kernel(types.int64(types.uint8[::1], types.int64[:, ::1], types.int64, types.int64))
def run_batch(arena, layout, n_chunks, now_ns):
    """Decode rx[:n_chunks chunks], apply, decide; append the new orders' frames to tx. Return orders placed."""
    (rx, rx_sizes, tx, signals, orders, rejects, reports, cursors, instruments, strategies, positions, accounts,
     exposures, open_orders, free_slots, sub_ptr, sub_strategy, source_seq, counters, reason_counts, trip_counts,
     transitions, scalars) = views(arena, layout)
    _decode_inbound(rx, rx_sizes, n_chunks, now_ns, signals, reports, cursors, instruments, counters)
    _apply_reports(reports, cursors, now_ns, strategies, instruments, positions, accounts, exposures, open_orders,
                  free_slots, scalars, counters, trip_counts, transitions)
    first = np.int64(cursors[RING_ORDERS, HEAD])
    tx_room = (len(tx) - scalars[S_TX_LEN]) // ORDER_FRAME_SIZE
    placed = _process_batch(signals, cursors, now_ns, tx_room, strategies, instruments, positions,
                           accounts, exposures, open_orders, free_slots, sub_ptr, sub_strategy, source_seq,
                           counters, reason_counts, trip_counts, transitions, scalars, orders, rejects)
    scalars[S_TX_LEN] = _encode_orders(orders, first, first + placed, instruments, tx, scalars[S_TX_LEN])
    return placed
