"""What the simulated-venue tests share: configs built by decoding, orders and quotes, a run of the core."""
import msgspec

from kernels.dtypes import MSG_ORDER, ORDER_LIMIT, SIDE_BUY
from sim.venue import SimOmsConfig, SimulatedOms
from wire.records import records
from wire.schema import MarketData, Order

T0 = 1_700_000_000_000_000_000
US = 1_000


def config(**fields):
    """Configs are built by decoding, as the engine builds them from TOML: constructors do not validate."""
    return msgspec.convert(fields, SimOmsConfig)


INSTANT = dict(ack_latency_us=0, fill_latency_us=0)


def order(order_id, side=SIDE_BUY, qty=10, price=100.0, order_type=ORDER_LIMIT, instrument=0, strategy=1,
          deploy=2):
    return Order(order_id=order_id, strategy=strategy, deploy=deploy, account=0, instrument=instrument,
                 side=side, order_type=order_type, qty=qty, price=price, ts_ns=T0, signal_source=0,
                 signal_seq=order_id, signal_ts_ns=T0)


def quote(bid, ask, last=0.0, instrument=0):
    return MarketData(instrument=instrument, bid=bid, ask=ask, last=last, ts_ns=T0)


def oms_with_market(bid=99.0, ask=101.0, last=0.0, **fields):
    oms = SimulatedOms(config(**{**INSTANT, **fields}))
    oms.on_market_data(quote(bid, ask, last), T0)
    return oms


def run(oms, *orders, now=T0):
    for o in orders:
        oms.on_order(o, now)
    return oms.pop_due(now)


def kinds(reports):
    return [r.exec_type for r in reports]



def engine_order_frame(o):
    """An Order frame as the engine writes it (kernels/codec.py): every field at full width (wire/records.py)."""
    rec = records(MSG_ORDER, 1)
    for name in Order.__struct_fields__:
        rec[name] = getattr(o, name)
    return rec.tobytes()
