"""The arena's layout: the compiled views trust it (they are built straight from the data pointer, no checks), so
`check_layout` is the one check, made in Python before a kernel sees an arena (a fresh plan, a restored one)."""
import numpy as np
import pytest
from numba import types

from kernels import arena as A
from kernels._jit import kernel

SIZES = A.Sizes(rx_bytes=64, rx_chunks=4, tx_bytes=64, signal_ring=4, order_ring=4, reject_ring=4, report_ring=4,
                fill_ring=4, instruments=2, strategies=3, accounts=1, order_table=4, signal_ids=1, subscriptions=1,
                sources=1, venue=1)


@kernel(types.void(A.ARENA, A.LAYOUT, types.int64[:, ::1]))
def _compiled_views(arena, layout, out):
    """(data address, rows, cols) of a 1-D and two 2-D regions as the kernels see them."""
    state = A.views(arena, layout)
    out[0, 0], out[0, 1], out[0, 2] = state.open_orders.ctypes.data, len(state.open_orders), 1
    out[1, 0], out[1, 1], out[1, 2] = state.positions.ctypes.data, state.positions.shape[0], state.positions.shape[1]
    out[2, 0], out[2, 1], out[2, 2] = state.venue_books.ctypes.data, state.venue_books.shape[0], \
        state.venue_books.shape[1]


def test_arena_when_planned_then_compiled_and_numpy_views_are_the_same_memory():
    layout, nbytes = A.plan(SIZES)
    arena = np.zeros(nbytes, np.uint8)
    A.check_layout(arena, layout)
    for region, view, (offset, size, rows, cols) in zip(A.REGIONS, A.numpy_views(arena, layout), layout.tolist()):
        assert view.dtype == region.dtype and view.nbytes == size and offset % A.ALIGN == 0, region.name
        assert view.shape == ((rows,) if region.cols is None else (rows, cols)), region.name
        assert view.__array_interface__["data"][0] == arena.ctypes.data + offset, region.name
    compiled = np.zeros((3, 3), np.int64)
    _compiled_views(arena, layout, compiled)
    numpy = A.numpy_views(arena, layout)
    assert compiled.tolist() == [[view.ctypes.data, *(view.shape + (1,))[:2]]
                                 for view in (numpy.open_orders, numpy.positions, numpy.venue_books)]


def test_arena_when_a_layout_does_not_fit_its_arena_then_it_is_refused():
    layout, nbytes = A.plan(SIZES)
    with pytest.raises(ValueError, match="venue_books"):
        A.check_layout(np.zeros(nbytes - A.ALIGN, np.uint8), layout)  # the last region runs off the end
    bad = layout.copy()
    bad[A.POSITIONS, 2] += 1  # a row more than its bytes hold
    with pytest.raises(ValueError, match="positions"):
        A.check_layout(np.zeros(nbytes, np.uint8), bad)
    with pytest.raises(ValueError, match="not an arena"):
        A.check_layout(np.zeros(nbytes, np.uint8), layout[:-1])
