"""All engine state lives in one preallocated byte arena, carved into typed regions.

RX holds inbound bytes as chunks (a datagram, or the whole frames of a TCP read); RX_SIZES their lengths.
TX holds encoded order frames for the OMS adapter to send.

Why one arena: a compiled call costs ~55 ns per array argument to unbox. Passing one arena and its layout instead of
twenty tables keeps a whole batch (decode, risk, positions, encode) at one call of ~200 ns overhead.
`layout[region] = (offset, nbytes, rows, cols)`; regions start on 64-byte (cache line) boundaries.
The engine builds the arena (engine/state.py); kernels take views of it with `views(arena, layout)`.
"""
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from kernels._jit import inline
from kernels.dtypes import (
    ACCOUNT_T, EXPOSURE_T, INSTRUMENT_T, OPEN_ORDER_T, ORDER_T, POSITION_T, REJECT_T, REPORT_T, SIGNAL_T,
    STRATEGY_T,
)

# Region ids, in arena order.
(RX, RX_SIZES, TX, SIGNALS, ORDERS, REJECTS, REPORTS, CURSORS, INSTRUMENTS, STRATEGIES, POSITIONS, ACCOUNTS, EXPOSURES,
 OPEN_ORDERS, FREE_SLOTS, SUB_PTR, SUB_STRATEGY, SOURCE_SEQ, COUNTERS, REASON_COUNTS, TRIP_COUNTS,
 TRANSITIONS, SCALARS) = range(23)
N_REGIONS = 23
REGION_NAMES = ("rx", "rx_sizes", "tx", "signals", "orders", "rejects", "reports", "cursors", "instruments", "strategies",
                "positions", "accounts", "exposures", "open_orders", "free_slots", "sub_ptr", "sub_strategy",
                "source_seq", "counters", "reason_counts", "trip_counts", "transitions", "scalars")
REGION_DTYPES = (np.dtype(np.uint8), np.dtype(np.int32), np.dtype(np.uint8), SIGNAL_T, ORDER_T, REJECT_T, REPORT_T,
                 np.dtype(np.uint64), INSTRUMENT_T, STRATEGY_T, POSITION_T, ACCOUNT_T, EXPOSURE_T, OPEN_ORDER_T,
                 np.dtype(np.int32), np.dtype(np.int32), np.dtype(np.int32), np.dtype(np.uint64),
                 np.dtype(np.int64), np.dtype(np.int64), np.dtype(np.int64), np.dtype(np.int8),
                 np.dtype(np.int64))

# Ring ids: CURSORS is (N_RINGS, 2) of (head, tail) sequences; a ring holds head - tail records.
RING_SIGNALS, RING_ORDERS, RING_REJECTS, RING_REPORTS = range(4)
N_RINGS = 4
HEAD, TAIL = 0, 1

# SCALARS slots.
S_FREE_TOP = 0       # free slots in FREE_SLOTS[:S_FREE_TOP]
S_ORDER_GEN = 1      # generation for the next order id
S_TX_LEN = 2         # bytes of encoded order frames waiting in TX
S_NOW_NS = 3         # clock of the last batch
N_SCALARS = 8

ALIGN = 64


def plan(shapes):
    """Offsets for regions of the given (rows, cols) shapes: returns (layout, total_bytes)."""
    layout = np.zeros((N_REGIONS, 4), np.int64)
    offset = 0
    for region, (rows, cols) in enumerate(shapes):
        nbytes = rows * cols * REGION_DTYPES[region].itemsize
        layout[region] = (offset, nbytes, rows, cols)
        offset += -(-nbytes // ALIGN) * ALIGN
    return layout, max(offset, ALIGN)


def numpy_views(arena, layout):
    """The same views as `views`, for Python code (control plane, metrics, tests)."""
    out = []
    for region in range(N_REGIONS):
        offset, nbytes, rows, cols = (int(v) for v in layout[region])
        view = arena[offset:offset + nbytes].view(REGION_DTYPES[region])
        out.append(view.reshape(rows, cols) if region in TWO_D else view)
    return tuple(out)


TWO_D = (CURSORS, POSITIONS, EXPOSURES, REASON_COUNTS, TRIP_COUNTS, TRANSITIONS)


@inline
def _flat(arena, layout, region):
    return arena[layout[region, 0]:layout[region, 0] + layout[region, 1]]


@intrinsic
def _as_grid(typingctx, flat, rows, cols):
    """A C-contiguous (rows, cols) view of a contiguous 1-D array. numba's `reshape` goes through a generic
    C helper that costs ~40 ns a call; a batch takes six 2-D views, so this is a tenth of an empty batch."""
    grid = flat.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        flat_value, rows_value, cols_value = args
        src = make_array(flat)(context, builder, flat_value)
        dst = make_array(grid)(context, builder)
        itemsize = src.itemsize
        populate_array(dst, data=src.data, shape=cgutils.pack_array(builder, [rows_value, cols_value]),
                       strides=cgutils.pack_array(builder, [builder.mul(cols_value, itemsize), itemsize]),
                       itemsize=itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, grid, dst._getvalue())

    return grid(flat, types.intp, types.intp), codegen


@inline
def views(arena, layout):
    """Typed views of every region, in region order (compiled code only; for Python use `numpy_views`)."""
    def grid(region, dtype):
        return _as_grid(_flat(arena, layout, region).view(dtype), layout[region, 2], layout[region, 3])
    return (
        _flat(arena, layout, RX),
        _flat(arena, layout, RX_SIZES).view(np.int32),
        _flat(arena, layout, TX),
        _flat(arena, layout, SIGNALS).view(SIGNAL_T),
        _flat(arena, layout, ORDERS).view(ORDER_T),
        _flat(arena, layout, REJECTS).view(REJECT_T),
        _flat(arena, layout, REPORTS).view(REPORT_T),
        grid(CURSORS, np.uint64),
        _flat(arena, layout, INSTRUMENTS).view(INSTRUMENT_T),
        _flat(arena, layout, STRATEGIES).view(STRATEGY_T),
        grid(POSITIONS, POSITION_T),
        _flat(arena, layout, ACCOUNTS).view(ACCOUNT_T),
        grid(EXPOSURES, EXPOSURE_T),
        _flat(arena, layout, OPEN_ORDERS).view(OPEN_ORDER_T),
        _flat(arena, layout, FREE_SLOTS).view(np.int32),
        _flat(arena, layout, SUB_PTR).view(np.int32),
        _flat(arena, layout, SUB_STRATEGY).view(np.int32),
        _flat(arena, layout, SOURCE_SEQ).view(np.uint64),
        _flat(arena, layout, COUNTERS).view(np.int64),
        grid(REASON_COUNTS, np.int64),
        grid(TRIP_COUNTS, np.int64),
        grid(TRANSITIONS, np.int8),
        _flat(arena, layout, SCALARS).view(np.int64),
    )
