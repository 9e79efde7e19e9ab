"""Execution quality per strategy x instrument, from the orders and fills rings, off the hot path.

An engine listener and housekeeper (engine/driver.py): `on_batch` (after a batch) only copies the batch's new
orders and fills out of their rings, with each order's arrival mark read from the open-order table while its
slot still holds it; `maintain(now)` (between steps, every heartbeat) does the arithmetic over everything staged
since, vectorised with numpy, and reads the instruments' marks for the markouts that came due. Nothing here runs
inside a compiled batch, and nothing holds a reference to the arena after the call that gave it.

What is measured (docs/metrics.md "Execution quality" has the formulas): per fill, arrival slippage (fill price
vs the instrument's mark when the order was decided) and limit slippage (vs the order's own price), both in bps
and units-weighted; markouts (the mark `h` after the fill vs the fill price, for each configured horizon `h`);
signal-to-fill and order-to-fill latency. Per order, once it has ended (fully filled, or gone from the open-order
table with quantity left: canceled, expired or rejected by the venue), the fill ratio, the cancel ratio and the
implementation shortfall (Perold): what the filled part cost against the arrival mark, plus the unfilled part
marked at the end, plus fees, over the order's notional at arrival.

Not measured: signal-to-ack. Acks are not in the fills ring and the open-order table keeps only an `acked` flag,
not its time; the latencies here are the ones the fills carry (signal_ts_ns, order_ts_ns, report_ts_ns, ts_ns).
"""
import collections

import numpy as np

from engine.metrics import LogHistogram
from kernels.dtypes import ORDER_SLOT_BITS
from kernels.latency import N_BUCKETS, SUB_BUCKETS

MS_NS = 1_000_000
SLOT_MASK = (1 << ORDER_SLOT_BITS) - 1
SUMS = (  # per (strategy, instrument), float64
    "orders", "ordered_units", "fills", "filled_units", "fees",
    "arrival_cost", "arrival_notional",   # sum side * (price - arrival mark) * qty * multiplier; arrival * qty * mult
    "limit_cost", "limit_notional",       # the same against the order's own price
    "done_orders", "canceled_orders", "done_ordered_units", "done_filled_units",
    "shortfall", "shortfall_notional",    # ended orders: cost + opportunity cost + fees; arrival notional ordered
)
_EMPTY_F8 = np.zeros(0)
_EMPTY_I8 = np.zeros(0, np.int64)


def concat_fields(chunks, names):
    """{field: one plain array} of chunks (record arrays, or {field: array} copies), field by field:
    np.concatenate of structured arrays promotes their dtypes first, which costs ~20 us a chunk; of plain
    columns, nothing."""
    return {name: np.concatenate([c[name] for c in chunks]) for name in names}


ORDER_FIELDS = ("order_id", "strategy", "instrument", "side", "qty")
FILL_FIELDS = ("order_id", "strategy", "instrument", "side", "qty", "price", "fee", "arrival_mark_ticks",
               "order_px_ticks", "signal_ts_ns", "ts_ns", "order_ts_ns", "report_ts_ns")


def log_buckets(values_ns):
    """The kernels' log-linear bucket (kernels/latency.py bucket_of) of each value, vectorised."""
    mantissa, exponent = np.frexp(np.maximum(values_ns, 1).astype(np.float64))
    return np.minimum((exponent - 1) * SUB_BUCKETS + ((2.0 * mantissa - 1.0) * SUB_BUCKETS).astype(np.int64),
                      N_BUCKETS - 1)


class MarkoutQueue:
    """Markouts waiting for their horizon: per horizon, chunks of {due, s, i, signed, price} in arrival order, each
    sorted by due time and none due before the chunk ahead of it (a chunk that would be, after the clock stepped
    back, is merged into the one ahead). Taking what is due reads only the chunks at the front. (One flat array
    filtered whole every heartbeat cost O(pending): 10 s x the fill rate at a 10 s horizon, most of the engine
    thread at saturation.)"""

    def __init__(self, horizons):
        self._queues = [collections.deque() for _ in range(horizons)]
        self.pending = 0

    def add(self, h, chunk):
        """Queue the markouts of `chunk` (equal-length arrays) at horizon index h."""
        n = len(chunk["due"])
        if not n:
            return
        queue = self._queues[h]
        while queue and queue[-1]["due"][-1] > chunk["due"].min():
            last = queue.pop()
            chunk = {key: np.concatenate([last[key], chunk[key]]) for key in chunk}
        due = chunk["due"]
        if len(due) > 1 and np.any(due[1:] < due[:-1]):
            order = np.argsort(due, kind="stable")
            chunk = {key: value[order] for key, value in chunk.items()}
        queue.append(chunk)
        self.pending += n

    def take(self, now_ns):
        """The markouts due at now_ns, removed from the queue, as {due, s, i, signed, price, h} (None: none due)."""
        taken = []
        for h, queue in enumerate(self._queues):
            while queue and queue[0]["due"][0] <= now_ns:
                head = queue[0]
                k = int(np.searchsorted(head["due"], now_ns, side="right"))
                if k == len(head["due"]):
                    queue.popleft()
                    part = head
                else:
                    part = {key: value[:k] for key, value in head.items()}
                    queue[0] = {key: value[k:] for key, value in head.items()}
                taken.append((h, part))
                self.pending -= k
        if not taken:
            return None
        out = concat_fields([part for _, part in taken], ("due", "s", "i", "signed", "price"))
        out["h"] = np.concatenate([np.full(len(part["due"]), h, np.int64) for h, part in taken])
        return out


class ExecutionQuality:
    """Listener + housekeeper of one engine. `report()` and `export()` read its sums (between batches)."""

    def __init__(self, state, config):
        self.state = state
        self.config = config
        self.horizons_ns = np.array(config.markouts_ms, np.int64) * MS_NS
        self.horizon_names = tuple(_horizon_name(ms) for ms in config.markouts_ms)
        shape = (len(state.strategies), len(state.instruments))
        self.sums = {name: np.zeros(shape) for name in SUMS}
        h = len(self.horizons_ns)
        self.markout_value = np.zeros(shape + (h,))     # sum side * (mark after h - price) * qty * multiplier
        self.markout_notional = np.zeros(shape + (h,))  # sum price * qty * multiplier
        self.markout_fills = np.zeros(shape + (h,), np.int64)
        self.signal_to_fill = LogHistogram(shape[0])
        self.order_to_fill = LogHistogram(shape[0])
        self.signal_to_fill_sum_ns = np.zeros(shape[0])
        self.order_to_fill_sum_ns = np.zeros(shape[0])
        self._staged_orders, self._staged_fills = [], []
        # field views of the arena's tables (allocated once, at start), taken once: a field lookup per batch costs
        self._slot_ids, self._slot_arrival = state.open_orders["order_id"], state.open_orders["arrival_mark_ticks"]
        self._marks = state.instruments["mark_ticks"]
        # the orders placed and not yet ended, in id order (ids rise): id, strategy, instrument, side, qty,
        # arrival mark in ticks, filled qty, cost of the fills so far (currency), fees so far
        self._open = {"id": np.zeros(0, np.uint64), "s": _EMPTY_I8, "i": _EMPTY_I8, "side": _EMPTY_I8,
                      "qty": _EMPTY_I8, "arrival": _EMPTY_I8, "filled": _EMPTY_I8, "cost": _EMPTY_F8,
                      "fees": _EMPTY_F8}
        self._markouts = MarkoutQueue(h)  # markouts waiting for their horizon

    # ------------------------------------------------------------------------------------------ engine thread
    def on_batch(self, orders, rejects, fills, now_ns):
        """Copy the batch's orders (with their arrival marks, read while their slots hold them) and fills."""
        for chunk in orders:  # by field: indexing whole records of the open-order table would copy every field
            ids = chunk["order_id"]
            slots = ids.view(np.int64) & SLOT_MASK  # int64 indices: numpy casts uint64 ones per call
            arrival = self._slot_arrival[slots]
            ended = self._slot_ids[slots] != ids  # ended inside the batch (an IOC), its slot maybe taken again
            if ended.any():
                arrival[ended] = self._marks[chunk["instrument"][ended]]
            self._staged_orders.append(({name: chunk[name].copy() for name in ORDER_FIELDS}, arrival))
        for chunk in fills:  # one copy of the records (13 fields are read: cheaper than 13 field copies)
            self._staged_fills.append(chunk.copy())

    def maintain(self, now_ns, engine=None):
        """Fold what was staged into the sums; end the orders gone from the table; take the markouts due."""
        if self._staged_orders:
            self._add_orders()
        if self._staged_fills:
            self._add_fills()
        if len(self._open["id"]):
            self._end_orders()
        if self._markouts.pending:
            self._take_markouts(now_ns)

    def _add_orders(self):
        staged, self._staged_orders = self._staged_orders, []
        orders = concat_fields([o for o, _ in staged], ORDER_FIELDS)
        arrival = np.concatenate([a for _, a in staged]).astype(np.int64)
        s, i, qty = orders["strategy"].astype(np.int64), orders["instrument"].astype(np.int64), orders["qty"]
        np.add.at(self.sums["orders"], (s, i), 1.0)
        np.add.at(self.sums["ordered_units"], (s, i), qty.astype(np.float64))
        zeros = np.zeros(len(qty))
        new = {"id": orders["order_id"], "s": s, "i": i, "side": orders["side"].astype(np.int64),
               "qty": qty.astype(np.int64), "arrival": arrival, "filled": np.zeros(len(qty), np.int64),
               "cost": zeros, "fees": zeros.copy()}
        self._open = {key: np.concatenate([self._open[key], new[key]]) for key in self._open}

    def _add_fills(self):
        staged, self._staged_fills = self._staged_fills, []
        f = concat_fields(staged, FILL_FIELDS)
        ins = self.state.instruments
        s, i = f["strategy"].astype(np.int64), f["instrument"].astype(np.int64)
        tick, mult = ins["tick_size"][i], ins["multiplier"][i]
        qty, side, price = f["qty"].astype(np.float64), f["side"].astype(np.float64), f["price"]
        units_mult = qty * mult
        arrival = f["arrival_mark_ticks"] * tick
        limit = f["order_px_ticks"] * tick
        sums = self.sums
        np.add.at(sums["fills"], (s, i), 1.0)
        np.add.at(sums["filled_units"], (s, i), qty)
        np.add.at(sums["fees"], (s, i), f["fee"])
        cost = side * (price - arrival) * units_mult
        known = arrival > 0
        np.add.at(sums["arrival_cost"], (s[known], i[known]), cost[known])
        np.add.at(sums["arrival_notional"], (s[known], i[known]), (arrival * units_mult)[known])
        priced = limit > 0
        np.add.at(sums["limit_cost"], (s[priced], i[priced]), (side * (price - limit) * units_mult)[priced])
        np.add.at(sums["limit_notional"], (s[priced], i[priced]), (limit * units_mult)[priced])
        # latency: the engine's clock when it applied the fill, and the OMS's on the report, vs the signal's and
        # the order's own times (0: not known)
        signal_known = f["signal_ts_ns"] > 0
        self._latency(self.signal_to_fill, self.signal_to_fill_sum_ns, s[signal_known],
                      (f["ts_ns"] - f["signal_ts_ns"])[signal_known])
        order_known = (f["order_ts_ns"] > 0) & (f["report_ts_ns"] > 0)
        self._latency(self.order_to_fill, self.order_to_fill_sum_ns, s[order_known],
                      (f["report_ts_ns"] - f["order_ts_ns"])[order_known])
        # markouts: one per fill and horizon, due h after the fill was applied
        if len(self.horizons_ns):
            signed = side * units_mult
            for h, horizon_ns in enumerate(self.horizons_ns.tolist()):
                self._markouts.add(h, {"due": f["ts_ns"] + horizon_ns, "s": s, "i": i, "signed": signed,
                                       "price": price})
        # each fill to its order, if it was placed while this engine ran (ids rise: a sorted search)
        ids = self._open["id"]
        if len(ids):
            at = np.searchsorted(ids, f["order_id"])
            at_clipped = np.minimum(at, len(ids) - 1)
            mine = (at < len(ids)) & (ids[at_clipped] == f["order_id"])
            rows = at_clipped[mine]
            np.add.at(self._open["filled"], rows, f["qty"][mine].astype(np.int64))
            np.add.at(self._open["cost"], rows, cost[mine])
            np.add.at(self._open["fees"], rows, f["fee"][mine])

    @staticmethod
    def _latency(histogram, sums, strategies, values_ns):
        if len(values_ns):
            np.add.at(histogram.counts, (strategies, log_buckets(values_ns)), 1)
            np.add.at(sums, strategies, values_ns.astype(np.float64))

    def _end_orders(self):
        """Orders whose slot no longer holds them live have ended: fold them into the order-level sums."""
        o = self._open
        table = self.state.open_orders
        slots = (o["id"] & SLOT_MASK).astype(np.int64)
        live = (table["order_id"][slots] == o["id"]) & (table["live"][slots] != 0)
        done = ~live
        if not done.any():
            return
        s, i = o["s"][done], o["i"][done]
        ins = self.state.instruments
        tick, mult = ins["tick_size"][i], ins["multiplier"][i]
        qty, filled = o["qty"][done].astype(np.float64), o["filled"][done].astype(np.float64)
        arrival = o["arrival"][done] * tick
        left = np.maximum(qty - filled, 0.0)
        opportunity = o["side"][done] * (ins["mark_ticks"][i] * tick - arrival) * left * mult
        sums = self.sums
        np.add.at(sums["done_orders"], (s, i), 1.0)
        np.add.at(sums["canceled_orders"], (s, i), (left > 0).astype(np.float64))
        np.add.at(sums["done_ordered_units"], (s, i), qty)
        np.add.at(sums["done_filled_units"], (s, i), filled)
        np.add.at(sums["shortfall"], (s, i), o["cost"][done] + opportunity + o["fees"][done])
        np.add.at(sums["shortfall_notional"], (s, i), arrival * qty * mult)
        self._open = {key: value[live] for key, value in o.items()}

    def _take_markouts(self, now_ns):
        m = self._markouts.take(now_ns)
        if m is None:
            return
        s, i, h, price = m["s"], m["i"], m["h"], m["price"]
        ins = self.state.instruments
        mark = ins["mark_ticks"][i] * ins["tick_size"][i]
        np.add.at(self.markout_value, (s, i, h), m["signed"] * (mark - price))
        np.add.at(self.markout_notional, (s, i, h), np.abs(m["signed"]) * price)
        np.add.at(self.markout_fills, (s, i, h), 1)

    # ------------------------------------------------------------------------------------------ reading
    def pairs(self):
        """(strategy, instrument) pairs that have placed an order or had a fill since the start."""
        active = (self.sums["orders"] > 0) | (self.sums["fills"] > 0)
        return [(int(s), int(i)) for s, i in zip(*np.nonzero(active))]

    def row(self, s, i):
        """The measures of one pair (JSON-ready)."""
        v = {name: float(self.sums[name][s, i]) for name in SUMS}
        out = {
            "orders": int(v["orders"]), "ordered_units": int(v["ordered_units"]), "fills": int(v["fills"]),
            "filled_units": int(v["filled_units"]), "orders_done": int(v["done_orders"]),
            "orders_canceled": int(v["canceled_orders"]),
            "fill_ratio": _ratio(v["done_filled_units"], v["done_ordered_units"]),
            "cancel_ratio": _ratio(v["canceled_orders"], v["done_orders"]),
            "arrival_slippage_bps": _bps(v["arrival_cost"], v["arrival_notional"]),
            "limit_slippage_bps": _bps(v["limit_cost"], v["limit_notional"]),
            "shortfall": v["shortfall"], "shortfall_bps": _bps(v["shortfall"], v["shortfall_notional"]),
            "markouts_bps": {name: _bps(float(self.markout_value[s, i, k]), float(self.markout_notional[s, i, k]))
                             for k, name in enumerate(self.horizon_names)},
            "markout_fills": {name: int(self.markout_fills[s, i, k]) for k, name in enumerate(self.horizon_names)},
        }
        return out

    def latency_us(self, s):
        """Signal-to-fill and order-to-fill percentiles of strategy s, in microseconds."""
        out = {}
        for name, hist in (("signal_to_fill_us", self.signal_to_fill), ("order_to_fill_us", self.order_to_fill)):
            out[name] = {"p50": hist.percentile(50, s) / 1000, "p99": hist.percentile(99, s) / 1000,
                         "count": hist.total(s)}
        return out

    def report(self):
        """{strategy: {instrument: measures, ...,"latency": ...}} for the final report."""
        state = self.state
        out = {}
        for s, i in self.pairs():
            name = state.strategy_names[s] if s < len(state.strategy_names) else str(s)
            out.setdefault(name, {"instruments": {}, **self.latency_us(s)})["instruments"][
                state.instrument_symbols[i]] = self.row(s, i)
        return out

    def export(self, bounds_ns):
        """What the metrics need, copied (plain data: the HTTP thread may read it while the engine runs on):
        the pairs' measures, and each latency as (counts at or below each bound, totals, sums in seconds)."""
        rows = slice(0, len(self.state.strategy_names))
        out = {"horizons": self.horizon_names, "pairs": [(s, i, self.row(s, i)) for s, i in self.pairs()]}
        for key, hist, sums in (("signal_to_fill", self.signal_to_fill, self.signal_to_fill_sum_ns),
                                ("order_to_fill", self.order_to_fill, self.order_to_fill_sum_ns)):
            out[key] = (*hist.cumulative(bounds_ns, rows), sums[rows] / 1e9)
        return out

    @property
    def open_orders_tracked(self):
        return len(self._open["id"])

    @property
    def markouts_waiting(self):
        return self._markouts.pending


def _ratio(num, den):
    return num / den if den else 0.0


def _bps(cost, notional):
    return cost / notional * 1e4 if notional else 0.0


def _horizon_name(ms):
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
