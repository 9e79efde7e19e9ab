"""Records of the plain-Python reference, generated from the kernels' dtypes (kernels/dtypes.py: the contract).

Two kinds, each picked for what is done to it most (measured here, Python 3.12, 14 fields):
- a table row (an instrument, a strategy, a position, ...) is read and written by every event: a class with
  __slots__ and one attribute per field, ~2x faster to read and write than a msgspec Struct and ~4x faster than
  a SimpleNamespace;
- a record made per order (a ring record: an order, a reject, a fill; a working order) is built once and then
  read a few times: a msgspec Struct, built positionally in C (~150 ns, a slots class ~430 ns, a SimpleNamespace
  ~290 ns); frozen but for the working order, whose leaves and ack change.
Values are Python ints and floats. `as_rows` turns records back into numpy rows of their dtype, so a test can
compare them with the kernels' bytes.
"""
import msgspec
import numpy as np

from kernels.dtypes import (
    ACCOUNT_T, EXPOSURE_T, FILL_T, INSTRUMENT_T, OPEN_ORDER_T, ORDER_T, POSITION_T, REJECT_T, REPORT_T, SIGNAL_T,
    STRATEGY_T,
)


def table_row_class(name, fields):
    """A class with __slots__ `fields` and a positional __init__ in that order (written out: no loop per row)."""
    args = ", ".join(fields)
    body = "\n".join(f"        self.{f} = {f}" for f in fields)
    source = f"class {name}:\n    __slots__ = {tuple(fields)!r}\n\n    def __init__(self, {args}):\n{body}\n"
    namespace = {}
    exec(compile(source, f"<reference.records.{name}>", "exec"), namespace)
    cls = namespace[name]
    cls.__module__ = __name__
    cls.__repr__ = _repr
    return cls


def _repr(row):
    return f"{type(row).__name__}({', '.join(f'{f}={getattr(row, f)!r}' for f in row.__slots__)})"


def record_class(name, dtype, fields=None, frozen=True):
    """A msgspec Struct with one field per dtype field (or per one of `fields`), in order, 0 or 0.0 by default."""
    fields = [(f, float, 0.0) if dtype[f].kind == "f" else (f, int, 0) for f in fields or dtype.names]
    return msgspec.defstruct(name, fields, frozen=frozen, gc=False, module=__name__)


Instrument = table_row_class("Instrument", INSTRUMENT_T.names)
Strategy = table_row_class("Strategy", STRATEGY_T.names)
Position = table_row_class("Position", POSITION_T.names)
Account = table_row_class("Account", ACCOUNT_T.names)
Exposure = table_row_class("Exposure", EXPOSURE_T.names)
# What a working order is; the kernels' prev/next links are their own way of finding them.
WORKING_FIELDS = tuple(f for f in OPEN_ORDER_T.names if f not in ("prev", "next"))
WorkingOrder = record_class("WorkingOrder", OPEN_ORDER_T, WORKING_FIELDS, frozen=False)

SignalRecord = record_class("SignalRecord", SIGNAL_T)
OrderRecord = record_class("OrderRecord", ORDER_T)
RejectRecord = record_class("RejectRecord", REJECT_T)
ReportRecord = record_class("ReportRecord", REPORT_T)
FillRecord = record_class("FillRecord", FILL_T)


def row_record(row, cls, fields=None):
    """A numpy structured row -> a record of `cls` (all the row's fields, or `fields` in that order)."""
    values = row.item() if fields is None else tuple(row[f].item() for f in fields)
    return cls(*values)


def as_rows(records, dtype, fields=None):
    """Records (anything with an attribute per dtype field, or per one of `fields`) -> a numpy array of dtype; the
    other fields and the padding bytes are zero, as in the kernels' zeroed arena, so rows compare by bytes."""
    rows = np.zeros(len(records), dtype)
    for name in fields or dtype.names:
        rows[name] = [getattr(r, name) for r in records]
    return rows
