"""The same work in plain Python: what a user would write without this project. The reference every report
measures our speed-up against.

asyncio for the sockets, dicts and small objects for the state, msgspec to decode signals and reports and to
encode orders (the documented wire format, wire/schema.py's Structs), one signal at a time. The rules are the
engine's (kernels/pipeline.py, risk.py, sizing.py, positions.py, breakers.py), written the way Python is written:
drop stale, duplicate and out-of-order signals; fan out to the subscribed strategies; size (target position or
signed quantity, lots, ticks); every pre-trade check with its own reason bit (all evaluated); book the order
(working orders, open quantities, exposure, token bucket); count rejects and trip breakers; apply execution
reports (positions, average price, realized P&L, fees, release); mark to market on market data.
bench/test_plain_python.py holds it to the kernels' orders and reject reasons on the bench workloads.

In process: `PlainEngine(config_dir).on_bytes(frames, now_ns) -> order frames`. As a process (the end-to-end
harness runs it like the engine): `python -m bench.plain_python CONFIG --udp H:P --tcp H:P --oms H:P`, stops on
SIGINT/SIGTERM and prints a JSON report on stdout.
"""
import argparse
import asyncio
import json
import math
import signal
import socket
import sys
import time
import tomllib
from pathlib import Path

import msgspec

from kernels.dtypes import (
    EXEC_ACK, EXEC_CANCELED, EXEC_FILL, EXEC_PARTIAL_FILL, EXEC_REJECT, MSG_EXECUTION_REPORT, MSG_MARKET_DATA,
    MSG_SIGNAL, ORDER_MARKET, R_DUPLICATE, R_GROSS_MAX, R_KILL_SWITCH, R_LOSS_ACCOUNT, R_LOSS_STRATEGY, R_NET_MAX,
    R_NO_REFERENCE, R_NOT_ACTIVE, R_NOT_FINITE, R_NOT_TRADABLE, R_NOTIONAL_MAX, R_OPEN_ORDERS_MAX, R_ORDER_TABLE_FULL,
    R_OUT_OF_ORDER, R_POSITION_MAX, R_PRICE_COLLAR, R_PRICE_INVALID, R_QTY_INVALID, R_QTY_LOT, R_QTY_MAX, R_RATE,
    R_RESTRICTED, R_SELF_MATCH, R_SIGNAL_RANGE, R_STALE, REASON_NAMES, SIDE_BUY, SIDE_SELL, SIGNAL_ORDER, SIGNAL_TARGET,
    WIRE_VERSION,
)
from wire.frames import HEADER
from wire.schema import ExecutionReport, MarketData, Order, Signal

ORDER_TYPES = {"limit": 0, "market": 1, "ioc": 2}
ACTIVE, READY, REDUCING, HALTED = "ACTIVE", "READY", "REDUCING", "HALTED"
QTY_CLAMP = 1 << 62


class Instrument:
    __slots__ = ("id", "tick", "lot", "multiplier", "band_pct", "tradable", "mark_ticks")

    def __init__(self, d):
        self.id, self.tick, self.lot = d["id"], d["tick_size"], d.get("lot_size", 1)
        self.multiplier, self.band_pct = d.get("multiplier", 1.0), d["price_band_pct"]
        self.tradable = d.get("tradable", True)
        self.mark_ticks = round(d["reference_price"] / d["tick_size"])

    def money_per_unit(self):
        return self.mark_ticks * self.tick * self.multiplier


class Account:
    __slots__ = ("name", "kill", "max_gross", "max_net", "loss_limit", "gross", "net", "realized", "unrealized",
                 "fees")

    def __init__(self, d):
        self.name, self.kill = d["name"], d.get("kill_switch", False)
        self.max_gross, self.max_net = d["max_gross_notional"], d["max_net_notional"]
        self.loss_limit = d["daily_loss_limit"]
        self.gross = self.net = self.realized = self.unrealized = self.fees = 0.0

    def pnl(self):
        return self.realized + self.unrealized - self.fees


class Strategy:
    def __init__(self, sid, d, account_id):
        self.id, self.name, self.account = sid, d["name"], account_id
        self.deploy = 1
        self.state = ACTIVE if d.get("enabled", False) else READY
        self.order_type = ORDER_TYPES[d.get("order_type", "limit")]
        self.instruments = set()
        lim, brk = d["limits"], d["breakers"]
        self.max_position = d["sizing"]["max_position"]
        self.max_order_qty, self.max_order_notional = lim["max_order_qty"], lim["max_order_notional"]
        self.max_open_orders, self.loss_limit_daily = lim["max_open_orders"], lim["daily_loss_limit"]
        self.rate, self.burst = lim["rate_per_second"], lim["burst"]
        self.tokens, self.tokens_ts = float(lim["burst"]), 0
        self.max_consecutive = brk["max_consecutive_rejects"]
        self.max_ratio, self.ratio_min, self.window_ns = brk["max_reject_ratio"], brk["ratio_min_orders"], \
            brk["ratio_window_ms"] * 1_000_000
        self.max_drawdown, self.loss_limit = brk["max_drawdown"], brk["loss_limit"]
        self.trip_state = REDUCING if brk.get("action", "halt") == "reduce" else HALTED
        self.open_orders = self.consecutive = self.window_orders = self.window_rejects = 0
        self.window_start = 0
        self.realized = self.unrealized = self.fees = self.peak = 0.0
        self.signals = self.orders = self.rejects = self.fills = 0
        self.reasons = {}

    def pnl(self):
        return self.realized + self.unrealized - self.fees


class Position:
    __slots__ = ("qty", "open_buy", "open_sell", "avg_px", "realized", "unrealized", "fees")

    def __init__(self):
        self.qty = self.open_buy = self.open_sell = 0
        self.avg_px = self.realized = self.unrealized = self.fees = 0.0


class Exposure:
    """One account on one instrument: its net of all strategies, and its working orders with the best prices
    (kept on placement, rescanned on release, as the engine does) for self-match prevention."""
    __slots__ = ("qty", "open_buy", "open_sell", "gross", "net", "working", "best_buy", "best_sell")

    def __init__(self):
        self.qty = self.open_buy = self.open_sell = 0
        self.gross = self.net = 0.0
        self.working = {}  # order id -> WorkingOrder
        self.best_buy = self.best_sell = None

    def add(self, wo):
        self.working[wo.order_id] = wo
        if wo.side == SIDE_BUY:
            if self.best_buy is None or wo.px_ticks > self.best_buy:
                self.best_buy = wo.px_ticks
        elif self.best_sell is None or wo.px_ticks < self.best_sell:
            self.best_sell = wo.px_ticks

    def remove(self, wo):
        del self.working[wo.order_id]
        buys = [o.px_ticks for o in self.working.values() if o.side == SIDE_BUY]
        sells = [o.px_ticks for o in self.working.values() if o.side != SIDE_BUY]
        self.best_buy = max(buys) if buys else None
        self.best_sell = min(sells) if sells else None


class WorkingOrder:
    __slots__ = ("order_id", "strategy", "deploy", "account", "instrument", "side", "qty", "leaves", "px_ticks")

    def __init__(self, order_id, strategy, account, instrument, side, qty, px_ticks):
        self.order_id, self.strategy, self.deploy = order_id, strategy.id, strategy.deploy
        self.account, self.instrument, self.side = account, instrument, side
        self.qty = self.leaves = qty
        self.px_ticks = px_ticks


def load(config_dir):
    root = Path(config_dir)
    read = lambda p: tomllib.loads(p.read_text())  # noqa: E731
    engine = read(root / "engine.toml")
    instruments = sorted(read(root / "instruments.toml")["instruments"], key=lambda d: d["id"])
    accounts = sorted(read(root / "accounts.toml")["accounts"], key=lambda d: d["id"])
    strategies = sorted((read(p) for p in (root / "strategies").glob("*.toml")), key=lambda d: d["name"])
    return engine, instruments, accounts, strategies


class PlainEngine:
    """The whole engine in plain Python objects. Not thread-safe."""

    def __init__(self, config_dir, clock=time.time_ns):
        engine, instruments, accounts, strategies = load(config_dir)
        self.clock = clock
        self.instruments = [Instrument(d) for d in instruments]
        self.symbols = {d["symbol"]: d["id"] for d in instruments}
        self.accounts = [Account(d) for d in accounts]
        account_ids = {a.name: i for i, a in enumerate(self.accounts)}
        self.strategies = []
        self.subscribers = {}  # signal id -> [Strategy]
        for sid, d in enumerate(strategies):
            st = Strategy(sid, d, account_ids[d["account"]])
            st.instruments = {self.symbols[s] for s in d["instruments"]}
            self.strategies.append(st)
            for g in d["signals"]:
                self.subscribers.setdefault(g, []).append(st)
        self.positions = {}  # (strategy id, instrument id) -> Position
        self.exposures = {}  # (account id, instrument id) -> Exposure
        self.working = {}    # order id -> WorkingOrder
        self.max_working = engine.get("max_open_orders", 65_536)
        self.sources = engine.get("sources", 1)
        self.last_seq = {}
        self.next_order_id = 1
        self.counters = dict.fromkeys(("frames", "malformed", "signals", "orders", "rejects", "reports", "fills",
                                       "unknown_order", "market_data", "unknown_signal", "trips"), 0)
        self.signal_decoder = msgspec.msgpack.Decoder(Signal)
        self.report_decoder = msgspec.msgpack.Decoder(ExecutionReport)
        self.md_decoder = msgspec.msgpack.Decoder(MarketData)
        self.encoder = msgspec.msgpack.Encoder()

    # ------------------------------------------------------------------------------------------ bytes in, bytes out
    def on_bytes(self, data, now_ns=None):
        """Whole frames in (signals, reports, market data); order frames out (bytes)."""
        now = self.clock() if now_ns is None else now_ns
        out = bytearray()
        view = memoryview(data)
        pos, end = 0, len(view)
        while end - pos >= 8:
            length, version, msg_type, reserved = HEADER.unpack_from(view, pos)
            body_end = pos + 8 + length
            if version != WIRE_VERSION or reserved or body_end > end:
                self.counters["malformed"] += 1
                break
            self.counters["frames"] += 1
            body = view[pos + 8:body_end]
            try:
                if msg_type == MSG_SIGNAL:
                    for order in self.on_signal(self.signal_decoder.decode(body), now):
                        self.write_order(order, out)
                elif msg_type == MSG_EXECUTION_REPORT:
                    self.on_report(self.report_decoder.decode(body), now)
                elif msg_type == MSG_MARKET_DATA:
                    self.on_market_data(self.md_decoder.decode(body))
                else:
                    self.counters["malformed"] += 1
            except msgspec.DecodeError:
                self.counters["malformed"] += 1
            pos = body_end
        return bytes(out)

    def write_order(self, order, out):
        body = self.encoder.encode(order)
        out += HEADER.pack(len(body), WIRE_VERSION, Order.msg_type, 0)
        out += body

    # ------------------------------------------------------------------------------------------ signals
    def on_signal(self, sig, now):
        """The orders one signal makes (a list of engine.wire.Order)."""
        self.counters["signals"] += 1
        subscribers = self.subscribers.get(sig.signal_id)
        if sig.source >= self.sources or not subscribers or sig.instrument >= len(self.instruments):
            self.counters["unknown_signal"] += 1
            return []
        last = self.last_seq.get(sig.source, 0)
        bad = 0
        if sig.seq == last:
            bad |= R_DUPLICATE
        elif sig.seq < last:
            bad |= R_OUT_OF_ORDER
        if sig.ttl_ns > 0 and now - sig.ts_ns > sig.ttl_ns:
            bad |= R_STALE
        if not (math.isfinite(sig.value) and math.isfinite(sig.price)):
            bad |= R_NOT_FINITE
        value = sig.value
        if sig.kind == SIGNAL_TARGET:
            if abs(value) > 1.0:
                bad |= R_SIGNAL_RANGE
        elif sig.kind == SIGNAL_ORDER:
            if math.isnan(value) or (math.isfinite(value) and value != math.floor(value)):
                bad |= R_QTY_LOT  # a fraction of a unit is no multiple of any lot
        else:
            bad |= R_SIGNAL_RANGE
        if sig.seq > last:
            self.last_seq[sig.source] = sig.seq
        ins = self.instruments[sig.instrument]
        orders = []
        for st in subscribers:
            st.signals += 1
            pos = self.position(st.id, ins.id)
            delta = self.size(sig, st, ins, pos)
            side = SIDE_BUY if delta > 0 else SIDE_SELL
            qty = abs(delta)
            px = self.limit_ticks(sig.price, ins.tick, side)
            if not bad and delta == 0 and sig.kind == SIGNAL_TARGET:
                continue
            reasons = bad
            if not bad:
                self.refill(st, now)
                reasons = self.check(st, ins, pos, side, qty, px)
            if reasons == 0:
                orders.append(self.place(sig, st, ins, pos, side, qty, px, now))
            else:
                st.rejects += 1
                self.counters["rejects"] += 1
                for bit, name in enumerate(REASON_NAMES):
                    if reasons >> bit & 1:
                        st.reasons[name] = st.reasons.get(name, 0) + 1
            if not bad:
                self.record_outcome(st, reasons != 0, now)
        return orders

    def position(self, s, i):
        key = (s, i)
        p = self.positions.get(key)
        if p is None:
            p = self.positions[key] = Position()
        return p

    def exposure(self, a, i):
        key = (a, i)
        e = self.exposures.get(key)
        if e is None:
            e = self.exposures[key] = Exposure()
        return e

    @staticmethod
    def clamp(x):
        return QTY_CLAMP if x > QTY_CLAMP else -QTY_CLAMP if x < -QTY_CLAMP else int(x)

    def size(self, sig, st, ins, pos):
        if not math.isfinite(sig.value):
            return 0
        if sig.kind == SIGNAL_TARGET:
            target = self.clamp(sig.value * st.max_position)
            target -= target % ins.lot if target >= 0 else -((-target) % ins.lot)
            return target - (pos.qty + pos.open_buy - pos.open_sell)
        if sig.kind == SIGNAL_ORDER:
            return self.clamp(sig.value)
        return 0

    def limit_ticks(self, price, tick, side):
        if not math.isfinite(price):
            return 0
        ticks = price / tick
        nearest = round(ticks)
        if abs(ticks - nearest) < 1e-9 * max(1.0, abs(ticks)):
            return self.clamp(nearest)
        return self.clamp(math.floor(ticks) if side == SIDE_BUY else math.ceil(ticks))

    @staticmethod
    def refill(st, now):
        elapsed = now - st.tokens_ts
        if elapsed > 0:
            st.tokens = min(st.burst, st.tokens + elapsed * 1e-9 * st.rate)
            st.tokens_ts = now

    def check(self, st, ins, pos, side, qty, px):
        """Every pre-trade rule, each its own bit; 0 = accept."""
        r = 0
        account = self.accounts[st.account]
        e = self.exposure(st.account, ins.id)
        held = pos.qty
        if side == SIDE_BUY:
            reducing = held < 0 and held + pos.open_buy + qty <= 0
        else:
            reducing = held > 0 and held - pos.open_sell - qty >= 0
        if st.state != ACTIVE and not (st.state == REDUCING and reducing):
            r |= R_NOT_ACTIVE
        if account.kill:
            r |= R_KILL_SWITCH
        if not ins.tradable:
            r |= R_NOT_TRADABLE
        if ins.id not in st.instruments:
            r |= R_RESTRICTED
        if qty <= 0:
            r |= R_QTY_INVALID
        elif qty % ins.lot:
            r |= R_QTY_LOT
        if qty > st.max_order_qty:
            r |= R_QTY_MAX
        if px <= 0:
            r |= R_PRICE_INVALID
        if float(qty) * abs(float(px)) * ins.tick * ins.multiplier > st.max_order_notional:
            r |= R_NOTIONAL_MAX
        ref = ins.mark_ticks
        if ref <= 0:
            r |= R_NO_REFERENCE
        elif abs(px - ref) * 100.0 > ins.band_pct * ref:
            r |= R_PRICE_COLLAR
        before = held + pos.open_buy if side == SIDE_BUY else held - pos.open_sell
        after = before + side * qty
        if abs(after) > st.max_position and abs(after) > abs(before):
            r |= R_POSITION_MAX
        unit = ins.money_per_unit()
        open_buy = e.open_buy + (qty if side == SIDE_BUY else 0)
        open_sell = e.open_sell + (0 if side == SIDE_BUY else qty)
        gross = max(abs(e.qty + open_buy), abs(e.qty - open_sell)) * unit
        net = (e.qty + open_buy - open_sell) * unit
        if account.gross - e.gross + gross > account.max_gross and gross > e.gross:
            r |= R_GROSS_MAX
        net_total = account.net - e.net + net
        if abs(net_total) > account.max_net and abs(net_total) > abs(account.net):
            r |= R_NET_MAX
        if st.tokens < 1.0:
            r |= R_RATE
        if st.open_orders >= st.max_open_orders:
            r |= R_OPEN_ORDERS_MAX
        if len(self.working) >= self.max_working:
            r |= R_ORDER_TABLE_FULL
        if not reducing:
            if st.pnl() <= -st.loss_limit_daily:
                r |= R_LOSS_STRATEGY
            if account.pnl() <= -account.loss_limit:
                r |= R_LOSS_ACCOUNT
        best = e.best_sell if side == SIDE_BUY else e.best_buy
        if best is not None and (st.order_type == ORDER_MARKET or (px >= best if side == SIDE_BUY else px <= best)):
            r |= R_SELF_MATCH
        return r

    def refresh_exposure(self, a, ins):
        e = self.exposure(a, ins.id)
        unit = ins.money_per_unit()
        gross = max(abs(e.qty + e.open_buy), abs(e.qty - e.open_sell)) * unit
        net = (e.qty + e.open_buy - e.open_sell) * unit
        account = self.accounts[a]
        account.gross += gross - e.gross
        account.net += net - e.net
        e.gross, e.net = gross, net

    def place(self, sig, st, ins, pos, side, qty, px, now):
        order_id = self.next_order_id
        self.next_order_id += 1
        wo = WorkingOrder(order_id, st, st.account, ins.id, side, qty, px)
        self.working[order_id] = wo
        e = self.exposure(st.account, ins.id)
        e.add(wo)
        if side == SIDE_BUY:
            pos.open_buy += qty
            e.open_buy += qty
        else:
            pos.open_sell += qty
            e.open_sell += qty
        self.refresh_exposure(st.account, ins)
        st.tokens -= 1.0
        st.open_orders += 1
        st.orders += 1
        self.counters["orders"] += 1
        return Order(order_id, st.id, st.deploy, st.account, ins.id, side, st.order_type, qty, px * ins.tick, now,
                     sig.source, sig.seq, sig.ts_ns)

    # ------------------------------------------------------------------------------------------ breakers
    def trip(self, st):
        if st.state in (ACTIVE, REDUCING) and st.state != st.trip_state:
            st.state = st.trip_state
            self.counters["trips"] += 1

    def record_outcome(self, st, rejected, now):
        if now - st.window_start >= st.window_ns:
            st.window_start, st.window_orders, st.window_rejects = now, 0, 0
        st.window_orders += 1
        if rejected:
            st.window_rejects += 1
            st.consecutive += 1
        else:
            st.consecutive = 0
        if 0 < st.max_consecutive <= st.consecutive:
            self.trip(st)
        elif st.max_ratio > 0 and st.window_orders >= st.ratio_min \
                and st.window_rejects >= st.max_ratio * st.window_orders:
            self.trip(st)

    def check_pnl(self, st):
        pnl = st.pnl()
        st.peak = max(st.peak, pnl)
        if st.loss_limit > 0 and pnl <= -st.loss_limit or st.max_drawdown > 0 and st.peak - pnl >= st.max_drawdown:
            self.trip(st)

    # ------------------------------------------------------------------------------------------ reports, marks
    def on_report(self, rep, now):
        self.counters["reports"] += 1
        wo = self.working.get(rep.order_id)
        if wo is None or wo.strategy != rep.strategy or wo.deploy != rep.deploy:
            self.counters["unknown_order"] += 1
            return
        if rep.exec_type == EXEC_ACK:
            return
        if rep.exec_type in (EXEC_REJECT, EXEC_CANCELED):
            self.release(wo)
            return
        if rep.exec_type not in (EXEC_FILL, EXEC_PARTIAL_FILL) or rep.qty <= 0 \
                or not (math.isfinite(rep.price) and rep.price > 0) or not (math.isfinite(rep.fee) and rep.fee >= 0):
            return
        qty = min(rep.qty, wo.leaves)
        st, ins = self.strategies[wo.strategy], self.instruments[wo.instrument]
        pos, e = self.position(st.id, ins.id), self.exposure(wo.account, ins.id)
        px = rep.price / ins.tick
        realized = self.apply_fill(pos, wo.side, qty, px) * ins.tick * ins.multiplier
        pos.realized += realized
        pos.fees += rep.fee
        st.realized += realized
        st.fees += rep.fee
        st.fills += 1
        account = self.accounts[wo.account]
        account.realized += realized
        account.fees += rep.fee
        e.qty += wo.side * qty
        if wo.side == SIDE_BUY:
            pos.open_buy -= qty
            e.open_buy -= qty
        else:
            pos.open_sell -= qty
            e.open_sell -= qty
        wo.leaves -= qty
        self.refresh_exposure(wo.account, ins)
        self.remark(st, ins, pos)
        self.counters["fills"] += 1
        if wo.leaves == 0 or rep.exec_type == EXEC_FILL:
            self.release(wo)
        self.check_pnl(st)

    @staticmethod
    def apply_fill(pos, side, qty, px):
        held = pos.qty
        realized = 0.0
        if held == 0 or (held > 0) == (side == SIDE_BUY):
            pos.avg_px = (pos.avg_px * abs(held) + px * qty) / (abs(held) + qty)
        else:
            closed = min(qty, abs(held))
            realized = (px - pos.avg_px) * closed * (1 if held > 0 else -1)
            after = held + side * qty
            if after == 0:
                pos.avg_px = 0.0
            elif (after > 0) != (held > 0):
                pos.avg_px = float(px)
        pos.qty = held + side * qty
        return realized

    def remark(self, st, ins, pos):
        unrealized = (ins.mark_ticks - pos.avg_px) * pos.qty * ins.tick * ins.multiplier if pos.qty else 0.0
        change = unrealized - pos.unrealized
        pos.unrealized = unrealized
        st.unrealized += change
        self.accounts[st.account].unrealized += change

    def release(self, wo):
        st, ins = self.strategies[wo.strategy], self.instruments[wo.instrument]
        pos, e = self.position(st.id, ins.id), self.exposure(wo.account, ins.id)
        if wo.side == SIDE_BUY:
            pos.open_buy -= wo.leaves
            e.open_buy -= wo.leaves
        else:
            pos.open_sell -= wo.leaves
            e.open_sell -= wo.leaves
        wo.leaves = 0
        del self.working[wo.order_id]
        e.remove(wo)
        self.refresh_exposure(wo.account, ins)
        st.open_orders -= 1

    def on_market_data(self, md):
        if md.instrument >= len(self.instruments):
            return
        ins = self.instruments[md.instrument]
        prices = (md.bid / ins.tick, md.ask / ins.tick, md.last / ins.tick)
        if not all(0.0 <= t <= 2.0 ** 53 for t in prices):
            return
        bid, ask, last = (round(t) for t in prices)
        ins.mark_ticks = (bid + ask) // 2 if bid > 0 and ask > 0 else last if last > 0 else ins.mark_ticks
        self.counters["market_data"] += 1
        for a in range(len(self.accounts)):
            if (a, ins.id) in self.exposures:
                self.refresh_exposure(a, ins)
        for st in self.strategies:
            pos = self.positions.get((st.id, ins.id))
            if pos is not None and (pos.qty or pos.unrealized):
                self.remark(st, ins, pos)
                self.check_pnl(st)

    def report(self):
        return {"engine": "plain_python", "counters": dict(self.counters),
                "strategies": {st.name: {"state": st.state, "orders": st.orders, "fills": st.fills,
                                         "rejects": {"total": st.rejects, "by_reason": dict(st.reasons)}}
                               for st in self.strategies}}


# ---------------------------------------------------------------------------------------------- the process
class _Oms(asyncio.Protocol):
    def __init__(self, engine):
        self.engine, self.transport, self.buffer = engine, None, bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        end = 0
        while len(self.buffer) - end >= 8:
            length = HEADER.unpack_from(self.buffer, end)[0]
            if end + 8 + length > len(self.buffer):
                break
            end += 8 + length
        if end:
            self.engine.on_bytes(bytes(self.buffer[:end]))
            del self.buffer[:end]


class _Signals(asyncio.Protocol):
    """TCP signals in: frames back to back; whole frames are processed at once, the rest waits."""

    def __init__(self, engine, oms):
        self.engine, self.oms, self.buffer = engine, oms, bytearray()

    def data_received(self, data):
        self.buffer += data
        end = 0
        while len(self.buffer) - end >= 8:
            length = HEADER.unpack_from(self.buffer, end)[0]
            if end + 8 + length > len(self.buffer):
                break
            end += 8 + length
        if end:
            out = self.engine.on_bytes(bytes(self.buffer[:end]))
            del self.buffer[:end]
            if out:
                self.oms.transport.write(out)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, engine, oms):
        self.engine, self.oms = engine, oms

    def datagram_received(self, data, addr):
        out = self.engine.on_bytes(data)
        if out:
            self.oms.transport.write(out)


def _address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(args):
    engine = PlainEngine(args.config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    oms = _Oms(engine)
    await loop.create_connection(lambda: oms, *_address(args.oms))
    closers = []
    if args.udp:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(engine, oms),
                                                           local_addr=_address(args.udp))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        closers.append(transport)
    if args.tcp:
        server = await loop.create_server(lambda: _Signals(engine, oms), *_address(args.tcp))
        closers.append(server)
    print(f"plain-python engine listening udp {args.udp} tcp {args.tcp}", file=sys.stderr, flush=True)
    started = time.time_ns()
    await stop.wait()
    for c in closers:
        c.close()
    oms.transport.close()
    report = engine.report()
    report["seconds"] = (time.time_ns() - started) / 1e9
    print(json.dumps(report), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.plain_python", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--udp", default=None, help="host:port to receive signal datagrams on")
    p.add_argument("--tcp", default=None, help="host:port to accept signal streams on")
    p.add_argument("--oms", required=True, help="host:port of the OMS (TCP)")
    asyncio.run(serve(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
