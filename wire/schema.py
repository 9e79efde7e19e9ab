"""The wire schema as msgspec Structs: one Struct per message, its fields in wire order (docs/wire.md).

A frame's body is the msgpack array of one Struct's fields in order (wire/frames.py puts the header on it).
kernels/codec.py is the compiled reader the engine uses, and it accepts exactly what these Structs decode.
Struct constructors do not validate: a test may build a bad message on purpose. Decoding validates every int
range, as the engine does.
"""
from typing import Annotated, ClassVar, Literal

import msgspec

from kernels.dtypes import MSG_CANCEL, MSG_EXECUTION_REPORT, MSG_MARKET_DATA, MSG_ORDER, MSG_SIGNAL, MSG_STATUS_REQUEST

U8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack ints stop at 2**64 - 1 (and msgspec bounds at int64)
I64 = Annotated[int, msgspec.Meta(ge=-2**63, le=2**63 - 1)]


class _Message(msgspec.Struct, array_like=True, gc=False, frozen=True, forbid_unknown_fields=True):
    msg_type: ClassVar[int]


class Signal(_Message):
    """Signal Engine -> engine."""
    msg_type: ClassVar[int] = MSG_SIGNAL
    source: U32
    seq: U64             # per source, starts at 1; the engine rejects duplicates and older sequences
    signal_id: U32
    instrument: U32
    kind: Literal[0, 1]  # SIGNAL_TARGET: value in [-1, 1] of max position; SIGNAL_ORDER: value = signed units
    value: float
    price: float         # limit price, currency
    ts_ns: I64           # when the signal was made, epoch ns
    ttl_ns: I64          # 0: no expiry


class MarketData(_Message):
    """Feed -> engine. A price of 0 means that side is unknown; NaN, inf or negative prices void the update."""
    msg_type: ClassVar[int] = MSG_MARKET_DATA
    instrument: U32
    bid: float
    ask: float
    last: float
    ts_ns: I64


class Order(_Message):
    """Engine -> OMS."""
    msg_type: ClassVar[int] = MSG_ORDER
    order_id: U64
    strategy: U32
    deploy: U32                   # the strategy's deploy number (1 at start-up, +1 per deploy)
    account: U32
    instrument: U32
    side: Literal[1, -1]          # SIDE_BUY, SIDE_SELL
    order_type: Literal[0, 1, 2]  # ORDER_LIMIT, ORDER_MARKET, ORDER_IOC
    qty: I64                      # units, > 0
    price: float                  # currency: px_ticks * tick_size
    ts_ns: I64
    signal_source: U32
    signal_seq: U64
    signal_ts_ns: I64


class ExecutionReport(_Message):
    """OMS -> engine. The engine checks exec_type and values downstream (C_REPORT_INVALID), not here."""
    msg_type: ClassVar[int] = MSG_EXECUTION_REPORT
    order_id: U64
    strategy: U32
    deploy: U32    # the order's, echoed
    exec_type: U8  # EXEC_ACK, EXEC_REJECT, EXEC_PARTIAL_FILL, EXEC_FILL, EXEC_CANCELED, EXEC_STATUS
    qty: I64       # this fill's units; 0 for non-fills (EXEC_STATUS: the units filled in all)
    price: float   # this fill's price, currency (EXEC_STATUS: the average price of all the fills)
    leaves: I64
    fee: float     # this fill's fee, currency (EXEC_STATUS: the fees of all the fills)
    ts_ns: I64
    reason: U32    # the OMS's reject code; 0 otherwise (EXEC_STATUS: STATUS_WORKING, STATUS_DONE, STATUS_UNKNOWN)


class Cancel(_Message):
    """Engine -> OMS: cancel a working order (a kill switch). The OMS answers with the order's CANCELED report,
    or, when the order is already done or its fill is on its way, with nothing more than what it owes anyway."""
    msg_type: ClassVar[int] = MSG_CANCEL
    order_id: U64
    strategy: U32
    deploy: U32
    ts_ns: I64


class StatusRequest(_Message):
    """Engine -> OMS: how do you see this order? (reconciliation, after a reconnect or a restart). The OMS answers
    with one ExecutionReport of exec_type EXEC_STATUS for the order, as it knows it now."""
    msg_type: ClassVar[int] = MSG_STATUS_REQUEST
    order_id: U64
    strategy: U32
    deploy: U32
    ts_ns: I64


MESSAGE_TYPES = {MSG_SIGNAL: Signal, MSG_MARKET_DATA: MarketData, MSG_ORDER: Order,
                 MSG_EXECUTION_REPORT: ExecutionReport, MSG_CANCEL: Cancel, MSG_STATUS_REQUEST: StatusRequest}
