"""The whole batch in one compiled call: inbound frames -> reports applied -> marks -> orders -> order frames.

Order of work inside a batch: execution reports first (they release open quantity and move positions), then
the marks that market data moved, then signals, so every signal is checked against the freshest state the
batch has.
"""
from numba import types

from kernels._jit import kernel
from kernels.arena import ARENA, LAYOUT, RING_ORDERS, S_TX_LEN, views
from kernels.codec import ORDER_FRAME_SIZE, decode_chunks, encode_to_tx
from kernels.pipeline import apply_execution_reports, process_signals
from kernels.rings import head


@kernel(types.int64(ARENA, LAYOUT, types.int64, types.int64))
def run_batch(arena, layout, n_chunks, now_ns):
    """Decode rx[:n_chunks chunks], apply, decide; append the new orders' frames to tx. Return orders placed."""
    state = views(arena, layout)
    decode_chunks(state, n_chunks, now_ns)
    apply_execution_reports(state, now_ns)
    first = head(state.cursors, RING_ORDERS)
    tx_room = (len(state.tx) - state.scalars[S_TX_LEN]) // ORDER_FRAME_SIZE
    placed = process_signals(state, now_ns, tx_room)
    encode_to_tx(state, first, first + placed)
    return placed
