"""All engine state lives in one preallocated byte arena, carved into typed regions by one table.

Why one arena: a compiled call costs ~55 ns per array argument to unbox. Passing one arena and its layout instead of
twenty tables keeps a whole batch (decode, risk, positions, encode) at one call of ~200 ns overhead.

`REGIONS` is the table: a region's name, its record dtype and the rule that sizes it from `Sizes` (the counts
the engine reads from its config). Everything else is generated from it: the region ids (`RX`, `POSITIONS`, ...),
`plan` (the layout), and `views`, which returns a `Regions` named tuple with one typed view per region, in compiled
code and in Python alike (`state.positions[s, i]`). A new table is one row.
`layout[region] = (offset, nbytes, rows, cols)`; regions start on 64-byte (cache line) boundaries; a vector
region has cols == 1. The engine allocates the arena (engine/state.py); kernels take `(arena, layout)`.
"""
from collections import namedtuple
from typing import Callable, NamedTuple

import numpy as np
from numba import types
from numba.np.numpy_support import from_dtype as numba_from_dtype
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from kernels._jit import generated_inline
from kernels.dtypes import (
    ACCOUNT_T, EVENT_NAMES, EXPOSURE_T, FILL_T, INSTRUMENT_T, N_COUNTERS, N_REASONS, N_TRIPS, OPEN_ORDER_T, ORDER_T,
    POSITION_T, REJECT_T, REPORT_T, SIGNAL_T, STATE_NAMES, STRATEGY_T, VENUE_EVENT_T, VENUE_ORDER_T, VENUE_T,
)

ALIGN = 64

# Ring ids: the cursors region is (N_RINGS, 2) of (head, tail) sequences (kernels/rings.py). Signals and reports
# are inbound: the batch decodes a frame into its ring and consumes it at once. Orders, rejects and fills are
# outbound: the batch writes them, the engine's Python side reads and releases them after the batch.
# Chunk sources (rx_sources): the OMS link (and the ticks of time passing) is 0, the listeners 1, 2, ... in
# config order. A source's role decides what it may send: the OMS link execution reports only, a listener signals
# and market data only (kernels/batch.py); what breaks its role is counted per source in role_drops and dropped.
SOURCE_OMS = 0
FIRST_LISTENER = SOURCE_OMS + 1
MAX_SOURCES = 16  # role_drops rows; a source number beyond is counted in the last row
ROLE_REPORT_OFF_OMS, ROLE_DATA_ON_OMS = 0, 1  # role_drops columns: the cause
RING_NAMES = ("signals", "orders", "rejects", "reports", "fills")  # by ring id; each is also its records' region
RING_SIGNALS, RING_ORDERS, RING_REJECTS, RING_REPORTS, RING_FILLS = range(len(RING_NAMES))
N_RINGS = len(RING_NAMES)

# Slots of the scalars region.
S_FREE_TOP = 0          # free slots in free_slots[:S_FREE_TOP]
S_ORDER_GEN = 1         # generation for the next order id
S_TX_LEN = 2            # bytes of encoded order frames waiting in tx
S_CLOCK_NS = 3          # stream time: the latest event's time (never goes back)
S_NEXT_COOLDOWN_NS = 4  # the earliest time a tripped strategy may cool down (int64 max: none)
S_STOP_CHUNK = 5        # after a batch: the chunk it stopped at (n_chunks: it took them all) ...
S_STOP_POS = 6          # ... and the byte of rx where the first event it did not take starts
S_MAX_FANOUT = 7        # the most strategies one signal id reaches: the room a signal may need
S_STRATEGIES = 8        # strategy rows in use (the table has room for more, registered while trading)
N_SCALARS = 16


class Sizes(NamedTuple):
    """The counts that size the arena (engine/state.py reads them from the config)."""
    rx_bytes: int         # inbound bytes per batch
    rx_chunks: int        # inbound chunks (datagrams, reads) per batch
    tx_bytes: int         # encoded order frames per batch
    signal_ring: int      # ring capacities in records (powers of two)
    order_ring: int
    reject_ring: int
    report_ring: int
    fill_ring: int
    instruments: int
    strategies: int
    accounts: int
    order_table: int      # working orders, engine-wide
    signal_ids: int       # largest subscribed signal id + 1
    subscriptions: int    # (signal id, strategy) pairs
    sources: int          # signal source ids 0..sources-1
    venue: int            # 1: the simulated venue runs inside the batch (its tables get rows); 0: it does not


class Region(NamedTuple):
    name: str
    dtype: np.dtype
    rows: Callable[[Sizes], int]
    cols: Callable[[Sizes], int] | None = None  # None: a vector (one row per record)


U1, I1, I4, I8, U8 = (np.dtype(c) for c in ("u1", "i1", "i4", "i8", "u8"))

REGIONS = (
    #      name             dtype          rows                           cols
    Region("rx",            U1,            lambda z: z.rx_bytes),                 # inbound chunks, back to back
    Region("rx_sizes",      I4,            lambda z: z.rx_chunks),                # their lengths
    Region("rx_times",      I8,            lambda z: z.rx_chunks),                # when each arrived (stream time)
    Region("rx_sources",    U1,            lambda z: z.rx_chunks),                # which transport it came from
    Region("role_drops",    I8,            lambda z: MAX_SOURCES,         lambda z: 2),  # by source and cause
    Region("tx",            U1,            lambda z: z.tx_bytes),                 # order frames for the OMS link
    Region("signals",       SIGNAL_T,      lambda z: z.signal_ring),
    Region("orders",        ORDER_T,       lambda z: z.order_ring),
    Region("rejects",       REJECT_T,      lambda z: z.reject_ring),
    Region("reports",       REPORT_T,      lambda z: z.report_ring),
    Region("fills",         FILL_T,        lambda z: z.fill_ring),
    Region("cursors",       U8,            lambda z: N_RINGS,             lambda z: 2),
    Region("instruments",   INSTRUMENT_T,  lambda z: z.instruments),
    Region("strategies",    STRATEGY_T,    lambda z: z.strategies),
    Region("positions",     POSITION_T,    lambda z: z.strategies,        lambda z: z.instruments),
    Region("accounts",      ACCOUNT_T,     lambda z: z.accounts),
    Region("exposures",     EXPOSURE_T,    lambda z: z.accounts,          lambda z: z.instruments),
    Region("open_orders",   OPEN_ORDER_T,  lambda z: z.order_table),
    Region("free_slots",    I4,            lambda z: z.order_table),              # a stack of open_orders slots
    Region("sub_ptr",       I4,            lambda z: z.signal_ids + 1),           # CSR over signal ids ...
    Region("sub_strategy",  I4,            lambda z: z.subscriptions),            # ... into strategy ids
    Region("source_seq",    U8,            lambda z: z.sources),                  # last sequence per source
    Region("counters",      I8,            lambda z: N_COUNTERS),
    Region("reason_counts", I8,            lambda z: z.strategies,        lambda z: N_REASONS),
    Region("trip_counts",   I8,            lambda z: z.strategies,        lambda z: N_TRIPS),
    Region("transitions",   I1,            lambda z: len(STATE_NAMES),    lambda z: len(EVENT_NAMES)),
    Region("scalars",       I8,            lambda z: N_SCALARS),
    Region("venue",         VENUE_T,       lambda z: 1),
    Region("venue_orders",  VENUE_ORDER_T, lambda z: z.order_table * z.venue),      # indexed like open_orders
    Region("venue_events",  VENUE_EVENT_T, lambda z: (5 * z.order_table + 2) * z.venue),  # heap, 2 spare rows
    Region("venue_books",   I4,            lambda z: z.instruments * z.venue, lambda z: 2),  # resting head, tail
)
N_REGIONS = len(REGIONS)
REGION_NAMES = tuple(r.name for r in REGIONS)
for _index, _region in enumerate(REGIONS):  # region ids: RX, RX_SIZES, ..., SCALARS
    globals()[_region.name.upper()] = _index

Regions = namedtuple("Regions", REGION_NAMES)

# numba types of the two arguments every public batch kernel takes first
ARENA = types.uint8[::1]
LAYOUT = types.int64[:, ::1]


def shapes(sizes: Sizes) -> list[tuple[int, int]]:
    """(rows, cols) of every region, in region order."""
    return [(int(r.rows(sizes)), 1 if r.cols is None else int(r.cols(sizes))) for r in REGIONS]


def plan(sizes: Sizes):
    """Offsets for the regions sized by `sizes`: returns (layout, total_bytes)."""
    layout = np.zeros((N_REGIONS, 4), np.int64)
    offset = 0
    for index, (rows, cols) in enumerate(shapes(sizes)):
        nbytes = rows * cols * REGIONS[index].dtype.itemsize
        layout[index] = (offset, nbytes, rows, cols)
        offset += -(-nbytes // ALIGN) * ALIGN
    return layout, max(offset, ALIGN)


def check_layout(arena: np.ndarray, layout: np.ndarray):
    """Raise ValueError unless every region of `layout` lies inside `arena` with the size its dtype and shape
    say: the compiled views trust the layout (they make no check of their own), so anything that hands an arena
    and a layout to a kernel checks them once, here (a fresh plan, or a snapshot restored from disk)."""
    if layout.shape != (N_REGIONS, 4) or layout.dtype != np.int64 or arena.dtype != np.uint8 or arena.ndim != 1:
        raise ValueError(f"not an arena and its layout: {arena.dtype}{arena.shape}, {layout.dtype}{layout.shape}")
    for region, (offset, nbytes, rows, cols) in zip(REGIONS, layout.tolist()):
        if min(offset, rows, cols) < 0 or nbytes != rows * cols * region.dtype.itemsize or \
                offset + nbytes > len(arena) or (cols != 1 and region.cols is None):
            raise ValueError(f"region {region.name}: layout {(offset, nbytes, rows, cols)} does not fit an arena "
                             f"of {len(arena)} bytes with {region.dtype.itemsize}-byte records")


# ---------------------------------------------------------------------------------------------- views
def _region_intrinsic(dtype, ndim):
    """A compiled function (arena, layout, index) -> the typed view of region `index`, built straight from the
    arena's data pointer and the layout row: no slice normalisation, no `.view` divisibility check, no reshape
    (numba's generic reshape helper alone costs ~40 ns). A batch takes ~30 views, so this is most of an empty
    batch. The checks it skips are made once, in Python, where the layout is made (`plan`) and the arena sized."""
    view = types.Array(numba_from_dtype(dtype), ndim, "C")

    @intrinsic
    def region(typingctx, arena, layout, index):
        def codegen(context, builder, signature, args):
            arena_value, layout_value, index_value = args
            src = make_array(arena)(context, builder, arena_value)
            rows_cols = make_array(layout)(context, builder, layout_value)
            row = [builder.load(cgutils.get_item_pointer(context, builder, layout, rows_cols,
                                                          [index_value, context.get_constant(types.intp, c)]))
                   for c in (0, 2, 3)]
            offset, rows, cols = row
            dst = make_array(view)(context, builder)
            itemsize = context.get_constant(types.intp, dtype.itemsize)
            data = builder.bitcast(builder.gep(src.data, [offset]), dst.data.type)
            shape = [rows] if ndim == 1 else [rows, cols]
            strides = [itemsize] if ndim == 1 else [builder.mul(cols, itemsize), itemsize]
            populate_array(dst, data=data, shape=cgutils.pack_array(builder, shape),
                           strides=cgutils.pack_array(builder, strides), itemsize=itemsize,
                           meminfo=src.meminfo, parent=src.parent)
            return impl_ret_borrowed(context, builder, view, dst._getvalue())

        return view(arena, layout, types.intp), codegen

    return region


def _views_source():
    """The source of `views`, one line per region: each region's view function is its own (its dtype and
    dimensions are compile-time constants), so the function is written out from the table."""
    lines = ["def views(arena, layout):", "    return Regions("]
    lines += [f"        _view_{r.name}(arena, layout, {index})," for index, r in enumerate(REGIONS)]
    lines.append("    )")
    return "\n".join(lines)


def _numpy_view(dtype, ndim):
    def region(arena, layout, index):
        offset, nbytes, rows, cols = (int(x) for x in layout[index])
        flat = arena[offset:offset + nbytes].view(dtype)
        return flat if ndim == 1 else flat.reshape(rows, cols)
    return region


def _build_views(make_view):
    namespace = {"Regions": Regions, **{f"_view_{r.name}": make_view(r.dtype, 1 if r.cols is None else 2)
                                        for r in REGIONS}}
    exec(compile(_views_source(), f"<{__name__}._views_source>", "exec"), namespace)
    return namespace["views"]


# The same source twice: compiled (2-D views by the intrinsic) and for Python code (control plane, metrics,
# tests), where numpy's reshape makes the same views. `views.python` tells the two-engine tests which to run.
numpy_views = _build_views(_numpy_view)
numpy_views.__doc__ = "Regions(arena, layout): a typed numpy view of every region, for Python code."
views = generated_inline(_build_views(_region_intrinsic))
views.python = numpy_views
