"""numba array types of the records in dtypes.py, for explicit kernel signatures."""
from numba import from_dtype, types

from kernels.dtypes import (
    ACCOUNT_T, EXPOSURE_T, INSTRUMENT_T, OPEN_ORDER_T, ORDER_T, POSITION_T, REJECT_T, REPORT_T, SIGNAL_T,
    STRATEGY_T,
)


def _vector(dtype):
    return types.Array(from_dtype(dtype), 1, "C")


def _grid(dtype):
    return types.Array(from_dtype(dtype), 2, "C")


SIGNALS = _vector(SIGNAL_T)
ORDERS = _vector(ORDER_T)
REJECTS = _vector(REJECT_T)
REPORTS = _vector(REPORT_T)
INSTRUMENTS = _vector(INSTRUMENT_T)
STRATEGIES = _vector(STRATEGY_T)
POSITIONS = _grid(POSITION_T)
ACCOUNTS = _vector(ACCOUNT_T)
EXPOSURES = _grid(EXPOSURE_T)
OPEN_ORDERS = _vector(OPEN_ORDER_T)
BYTES = types.uint8[::1]
I4 = types.int32[::1]
I8 = types.int64[::1]
U8 = types.uint64[::1]
I8_GRID = types.int64[:, ::1]
U8_GRID = types.uint64[:, ::1]
TRANSITIONS = types.int8[:, ::1]
