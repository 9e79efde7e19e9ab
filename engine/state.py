"""Engine state: the one byte arena of kernels/arena.py, sized and filled from a Config, plus the name maps and
the small Python helpers the control plane and reports use between batches.

Units follow kernels/dtypes.py: prices in ticks (round(price / tick_size)), quantities in units, times in ns
(config milliseconds * 1_000_000), money in currency. Initial values that are not zero:
    instruments  ref_px_ticks = mark_ticks = round(reference_price / tick_size); bid/ask/last_ticks = 0 and
                 md_ts_ns = 0 mean "no market data yet" (a real price is >= 1 tick)
    strategies   state = ACTIVE if enabled else READY; trip_cause = NO_TRIP; tokens = burst (a full bucket,
                 tokens_ts_ns = 0);
                 deploy = 1 (the deploy number: see Deploy)
    positions    allowed = 1 for the instruments the strategy lists, 0 (restricted) for the others
    exposures    best_buy_ticks = best_sell_ticks = NO_PRICE ("no working order" on either side; NO_PRICE is
                 int64 min, so a kernel must test `== NO_PRICE` and never rely on it in a min/max for the sell
                 side); working_head = NO_SLOT
    open_orders  prev = next = NO_SLOT, live = 0
    free_slots   [C-1, ..., 1, 0] with SCALARS[S_FREE_TOP] = C, so slot 0 pops first
    scalars      S_ORDER_GEN = 1, so no order id is 0
    sub_ptr      CSR over signal ids: the strategies subscribed to signal g are
                 sub_strategy[sub_ptr[g]:sub_ptr[g + 1]], in strategy id order
    transitions  a copy of lifecycle.TRANSITIONS
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import numpy as np

from engine.config import Config, load_config
from engine.config.schema import Account, Strategy
from kernels import arena as A
from kernels.dtypes import (
    ACTIVE, BREAKER_ACTION_NAMES, C_BATCH_STOPS, KILL_ACCOUNT, NO_PRICE, NO_SLOT, NO_TRIP, ORDER_TYPE_NAMES, READY,
    REASON_LEVEL, REASON_NAMES, RETIRED, SIDES_NAMES, STATE_NAMES, TRIP_NAMES,
)
from kernels.breakers import NEVER
from kernels.lifecycle import TRANSITIONS
from sim.venue import configure_venue

__all__ = ["Deploy", "EngineState", "allocate_arena", "arena_sizes"]

MS_NS = 1_000_000
# What two engines fed the same input hold alike, whatever batches they cut it into: all of the arena but the
# inbound and outbound byte buffers and the facts of the last batch's cut.
TRANSIENT_REGIONS = ("rx", "rx_sizes", "rx_times", "rx_sources", "tx")
TRANSIENT_SCALARS = [A.S_TX_LEN, A.S_STOP_CHUNK, A.S_STOP_POS]
TRANSIENT_COUNTERS = [C_BATCH_STOPS]


class Deploy(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a strategy. `number` is what STRATEGY_T.deploy, orders and fills carry (1 for the
    config loaded at start-up, +1 per deploy); `version` is the configured label, `config_hash` its sha256,
    `spec` the strategy as it runs (the file's, with any limits set live since)."""
    number: int
    version: str
    config_hash: str
    source: str
    spec: Strategy
    deployed_ns: int = 0
    actor: str = "config"
    note: str = ""  # e.g. "rollback to deploy 2"


class ShadowRun(msgspec.Struct, kw_only=True):
    """A shadow version run beside live strategy `live` in row `row`; `baseline`: the live row's order counts
    when it started, so the report compares like with like."""
    live: int
    row: int
    version: str
    started_ns: int
    stopped_ns: int = 0
    baseline: dict[str, int]
    baseline_reasons: list[int]


def instruments_hash(config: Config) -> str:
    """sha256 of the instruments as configured: what an arena built from them holds in ticks and lots."""
    return hashlib.sha256(msgspec.json.encode(config.instruments, order="sorted")).hexdigest()


def arena_sizes(config: Config) -> A.Sizes:
    """The counts that size every arena region (kernels/arena.py REGIONS), read from a config."""
    engine, rings = config.engine, config.engine.rings
    return A.Sizes(
        rx_bytes=engine.rx_bytes, rx_chunks=engine.rx_chunks, tx_bytes=engine.tx_bytes,
        signal_ring=rings.signals, order_ring=rings.orders, reject_ring=rings.rejects, report_ring=rings.reports,
        fill_ring=rings.fills,
        instruments=len(config.instruments), strategies=engine.max_strategies, accounts=len(config.accounts),
        order_table=engine.max_open_orders, signal_ids=engine.max_signal_id + 1,
        subscriptions=engine.max_subscriptions, sources=engine.sources,
        venue=int(engine.oms.kind == "sim"))


def allocate_arena(nbytes: int) -> np.ndarray:
    """A zeroed uint8 arena whose first byte is on a cache line, so every region (64-byte aligned offsets) is too."""
    raw = np.zeros(nbytes + A.ALIGN, np.uint8)
    start = -raw.ctypes.data % A.ALIGN
    return raw[start:start + nbytes]


class EngineState:
    """The arena, its layout, a named numpy view per region (`state.strategies`, `state.positions`, ... one
    attribute per `arena.REGION_NAMES` entry), the name <-> id maps and control-plane helpers.

    Kernels take `(arena, layout)`; Python code reads and writes the views, between batches only.
    `EngineState(config, arena, layout)` wraps an existing arena as it is (a restored snapshot: allocate it with
    `allocate_arena` so regions stay cache-line aligned); `build` makes a fresh one from the config."""

    def __init__(self, config: Config, arena: np.ndarray, layout: np.ndarray):
        self.config = config
        self.arena = arena
        A.check_layout(arena, layout)
        self.layout = layout
        self.views = A.numpy_views(arena, layout)
        for name, view in zip(A.REGION_NAMES, self.views):
            setattr(self, name, view)
        self.strategy_names = [s.name for s in config.strategies]  # by row; register appends
        self.instrument_symbols = tuple(i.symbol for i in config.instruments)
        self.account_names = tuple(a.name for a in config.accounts)
        self.strategy_ids = {name: s for s, name in enumerate(self.strategy_names)}
        self.instrument_ids = {symbol: i for i, symbol in enumerate(self.instrument_symbols)}
        self.account_ids = {name: a for a, name in enumerate(self.account_names)}
        self.deploys = [[Deploy(number=1, version=s.version, config_hash=digest, source=source, spec=s)]
                        for s, digest, source in zip(config.strategies, config.strategy_hashes, config.strategy_files)]
        self.account_specs = list(config.accounts)  # as they run: limits set live replace them
        self.shadows: list[ShadowRun] = []  # every shadow run, the running ones with stopped_ns == 0

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def build(cls, config: Config) -> EngineState:
        """Plan and allocate the arena for `config` and fill every table from it."""
        layout, nbytes = A.plan(arena_sizes(config))
        state = cls(config, allocate_arena(nbytes), layout)
        state._fill()
        return state

    @classmethod
    def load(cls, path: str | Path) -> EngineState:
        """`build(load_config(path))`."""
        return cls.build(load_config(path))

    def _fill(self) -> None:
        config = self.config
        for i, spec in enumerate(config.instruments):
            row = self.instruments[i]
            ref_ticks = round(spec.reference_price / spec.tick_size)
            row["tick_size"], row["lot_size"], row["multiplier"] = spec.tick_size, spec.lot_size, spec.multiplier
            row["band_pct"], row["tradable"] = spec.price_band_pct, spec.tradable
            row["max_mark_age_ns"] = spec.max_mark_age_ms * MS_NS
            row["ref_px_ticks"] = row["mark_ticks"] = ref_ticks

        for a, spec in enumerate(config.accounts):
            self.accounts[a]["kill"] = KILL_ACCOUNT if spec.kill_switch else 0
            self.write_account_limits(a, spec)
        self.exposures["best_buy_ticks"] = NO_PRICE
        self.exposures["best_sell_ticks"] = NO_PRICE
        self.exposures["working_head"] = NO_SLOT

        for s, spec in enumerate(config.strategies):
            row = self.strategies[s]
            row["state"] = ACTIVE if spec.enabled else READY
            row["trip_cause"] = NO_TRIP
            row["tokens"] = spec.limits.burst
            row["peak_pnl"] = 0.0
            self.write_strategy_params(s, spec, self.deploys[s][-1].number)

        capacity = config.engine.max_open_orders
        self.open_orders["prev"] = NO_SLOT
        self.open_orders["next"] = NO_SLOT
        self.free_slots[:] = np.arange(capacity - 1, -1, -1, dtype=np.int32)
        self.scalars[A.S_FREE_TOP] = capacity
        self.scalars[A.S_ORDER_GEN] = 1
        self.scalars[A.S_NEXT_COOLDOWN_NS] = NEVER

        self.scalars[A.S_STRATEGIES] = len(config.strategies)
        self.index_subscriptions()

        self.transitions[:] = TRANSITIONS
        if config.engine.oms.kind == "sim":
            configure_venue(self, config.engine.oms.sim)

    def write_strategy_params(self, s: int, spec: Strategy, deploy: int) -> None:
        """Strategy s's configured rows from `spec` (order type, account, limits, breakers, the instruments it may
        trade) and its deploy number; its live state (positions, P&L, tokens, breaker windows) is left alone."""
        row, limits, breakers = self.strategies[s], spec.limits, spec.breakers
        row["breaker_action"] = BREAKER_ACTION_NAMES.index(breakers.action)
        row["order_type"] = ORDER_TYPE_NAMES.index(spec.order_type)
        row["deploy"] = deploy
        row["account"] = self.account_ids[spec.account]
        row["max_position"] = spec.sizing.max_position
        row["max_order_qty"], row["max_order_notional"] = limits.max_order_qty, limits.max_order_notional
        row["max_open_orders"], row["daily_loss_limit"] = limits.max_open_orders, limits.daily_loss_limit
        row["rate_per_s"], row["burst"] = limits.rate_per_second, limits.burst
        row["tokens"] = min(row["tokens"], limits.burst)
        row["max_consecutive_rejects"] = breakers.max_consecutive_rejects
        row["ratio_min_orders"], row["max_reject_ratio"] = breakers.ratio_min_orders, breakers.max_reject_ratio
        row["ratio_window_ns"] = breakers.ratio_window_ms * MS_NS
        row["max_drawdown"], row["loss_limit"] = breakers.max_drawdown, breakers.loss_limit
        row["cooldown_ns"] = breakers.cooldown_ms * MS_NS
        row["max_fills_per_window"], row["fill_window_ns"] = breakers.max_fills_per_window, \
            breakers.fill_window_ms * MS_NS
        row["max_off_band_fills"] = breakers.max_off_band_fills
        row["sides"] = SIDES_NAMES[limits.sides]
        row["duplicate_window_ns"] = limits.duplicate_window_ms * MS_NS
        allowed = {self.instrument_ids[symbol] for symbol in spec.instruments}
        for i in range(len(self.instruments)):
            self.positions[s, i]["allowed"] = int(i in allowed)

    def index_subscriptions(self) -> None:
        """Rebuild the subscription index (CSR over signal ids, strategy id order within each) from the specs that
        run, leaving RETIRED strategies out; and the most strategies one signal reaches (the room a signal may
        need). Between batches only: at start, and after a command that registers, deploys or retires."""
        rows = range(int(self.scalars[A.S_STRATEGIES]))
        live = [(s, self.deploys[s][-1].spec.signals) for s in rows if self.strategies[s]["state"] != RETIRED]
        counts = np.zeros(len(self.sub_ptr), np.int64)  # sub_ptr has max_signal_id + 2 entries
        for _, signals in live:
            for signal in signals:
                counts[signal + 1] += 1
        if counts.sum() > len(self.sub_strategy):
            raise ValueError(f"{counts.sum()} subscriptions, room for {len(self.sub_strategy)} "
                             f"(engine.toml max_subscriptions)")
        self.sub_ptr[:] = np.cumsum(counts)
        fill = self.sub_ptr[:-1].copy()
        for s, signals in live:
            for signal in signals:
                self.sub_strategy[fill[signal]] = s
                fill[signal] += 1
        self.scalars[A.S_MAX_FANOUT] = int(counts.max())

    def write_account_limits(self, a: int, spec: Account) -> None:
        row = self.accounts[a]
        row["max_gross_notional"], row["max_net_notional"] = spec.max_gross_notional, spec.max_net_notional
        row["daily_loss_limit"] = spec.daily_loss_limit
        row["sides"] = SIDES_NAMES[spec.sides]

    # ------------------------------------------------------------------------------------------- names
    def strategy_id(self, name: str) -> int:
        return _lookup(self.strategy_ids, name, "strategy")

    def instrument_id(self, symbol: str) -> int:
        return _lookup(self.instrument_ids, symbol, "instrument")

    def account_id(self, name: str) -> int:
        return _lookup(self.account_ids, name, "account")

    def subscribers(self, signal_id: int) -> list[int]:
        """Strategy ids subscribed to a signal id (empty for an id nobody subscribes to)."""
        if not 0 <= signal_id < len(self.sub_ptr) - 1:
            return []
        return self.sub_strategy[self.sub_ptr[signal_id]:self.sub_ptr[signal_id + 1]].tolist()

    # ------------------------------------------------------------------------------------------- lifecycle
    def state_of(self, name: str) -> str:
        return STATE_NAMES[self.strategies[self.strategy_id(name)]["state"]]

    def digest(self) -> str:
        """sha256 of the state the engine's decisions depend on (the arena but its transient parts): an engine
        recovered from a journal and one that never died on the same input have the same digest."""
        h = hashlib.sha256()
        for name, view in zip(A.REGION_NAMES, self.views):
            if name in TRANSIENT_REGIONS:
                continue
            if name in ("scalars", "counters"):
                view = view.copy()
                view[TRANSIENT_SCALARS if name == "scalars" else TRANSIENT_COUNTERS] = 0
            h.update(name.encode())
            h.update(view.tobytes())
        return h.hexdigest()

    # ------------------------------------------------------------------------------------------- reports
    def snapshot(self) -> dict[str, dict]:
        """A plain-dict report per strategy name (JSON-ready: only str, int, float, bool, None, dict, list)."""
        report = {name: self.strategy_snapshot(s) for s, name in enumerate(self.strategy_names)}
        for run in self.shadows:
            report[self.strategy_names[run.live]].setdefault("shadows", []).append(self.shadow_report(run))
        return report

    def strategy_snapshot(self, s: int) -> dict:
        """Strategy s's report: state, deploy, positions, P&L, orders, fills, rejects by reason, breaker (and the
        live strategy a shadow runs beside)."""
        row = self.strategies[s]
        deploy = self.deploys[s][-1]
        positions = {}
        for i, symbol in enumerate(self.instrument_symbols):
            p = self.positions[s, i]
            if not (p["allowed"] or p["qty"] or p["open_buy"] or p["open_sell"]):
                continue
            positions[symbol] = {
                "qty": int(p["qty"]), "open_buy": int(p["open_buy"]), "open_sell": int(p["open_sell"]),
                "avg_price": float(p["avg_px_ticks"]) * float(self.instruments[i]["tick_size"]),
                "realized": float(p["realized"]), "unrealized": float(p["unrealized"]),
                "fees": float(p["fees"]), "allowed": bool(p["allowed"]),
            }
        cause = int(row["trip_cause"])
        report = {
            "id": s,
            "state": STATE_NAMES[row["state"]],
            "version": deploy.version,
            "deploy": int(row["deploy"]),
            "config_hash": deploy.config_hash,
            "account": self.account_names[row["account"]],
            "positions": positions,
            "pnl": {"realized": float(row["realized"]), "unrealized": float(row["unrealized"]),
                    "fees": float(row["fees"])},
            "signals": int(row["signals"]),
            "orders": int(row["orders"]),
            "open_orders": int(row["open_orders"]),
            "fills": int(row["fills"]),
            "filled_qty": int(row["filled_qty"]),
            "rejects": {"total": int(row["rejects"]),
                        "by_reason": _reasons(self.reason_counts[s]), "by_level": _levels(self.reason_counts[s])},
            "breaker": {"trip_cause": None if cause == NO_TRIP else TRIP_NAMES[cause],
                        "trips": {TRIP_NAMES[t]: int(c) for t, c in enumerate(self.trip_counts[s]) if c},
                        "consecutive_rejects": int(row["consecutive_rejects"])},
        }
        if row["shadow_of"]:
            report["shadow_of"] = self.strategy_names[int(row["shadow_of"]) - 1]
        return report

    def order_counts(self, s: int) -> dict[str, int]:
        row = self.strategies[s]
        return {"orders": int(row["orders"]), "buy_qty": int(row["ordered_buy"]), "sell_qty": int(row["ordered_sell"]),
                "rejects": int(row["rejects"])}

    def shadow_report(self, run: ShadowRun) -> dict:
        """What the shadow version would have done beside what the live one did, over the same signals since it
        started: orders, units by side, rejects and their reasons."""
        live_now = self.order_counts(run.live)
        live = {key: live_now[key] - run.baseline[key] for key in live_now}
        live_reasons = self.reason_counts[run.live] - np.asarray(run.baseline_reasons)
        return {"strategy": self.strategy_names[run.row], "version": run.version, "running": run.stopped_ns == 0,
                "started_ns": run.started_ns, "stopped_ns": run.stopped_ns,
                "live": {**live, "by_reason": _reasons(live_reasons)},
                "shadow": {**self.order_counts(run.row), "by_reason": _reasons(self.reason_counts[run.row])}}


def _reasons(counts) -> dict[str, int]:
    return {REASON_NAMES[r]: int(c) for r, c in enumerate(counts) if c}


def _levels(counts) -> dict[str, int]:
    """Reason counts summed by the level that enforces each reason (kernels/dtypes.py REASON_LEVEL)."""
    by_level = {}
    for r, c in enumerate(counts):
        if c:
            level = REASON_LEVEL[REASON_NAMES[r]]
            by_level[level] = by_level.get(level, 0) + int(c)
    return by_level


def _lookup(ids: dict[str, int], name: str, what: str) -> int:
    try:
        return ids[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(ids)}") from None
