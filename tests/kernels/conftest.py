"""Kernel test fixtures: a small programmatic state builder (no config loader) and the two engines.

`make_state(n_strategies, n_instruments, n_accounts, **overrides)` builds one arena the way the engine does
(`arena.plan` + `arena.numpy_views`) and returns a `KernelState`: the views by region name (`k.strategies`,
`k.positions`, ...), `copy()` and ring helpers; `engine.process_signals(k, now_ns, max_orders)` (and
`apply_reports`, `apply_mark`) call a kernel on it. Defaults are sane and loose (tick 0.01, lot 100,
reference 100.00, every strategy ACTIVE, breakers off) so a test states only what it is about.

`engine` runs a test body on the compiled kernels and on their Python source. For the Python engine every
compiled function of `kernels/` is swapped for its `py_func` while the module's tests run, so helpers run as
plain Python too (a bare `kernel.py_func` would still call compiled helpers).
"""
import importlib
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from kernels import arena as A  # kernels before numba: kernels/__init__ points numba's cache at .numba_cache
from kernels import rings
from kernels.dtypes import ACTIVE, NO_PRICE, NO_SLOT, NO_TRIP, SIDES_BOTH
from kernels.lifecycle import TRANSITIONS
from kernels.pipeline import apply_mark, apply_reports, process_signals
from sim.venue import SimOmsConfig, configure_venue

NOW_NS = 1_700_000_000_000_000_000

INSTRUMENT_DEFAULTS = dict(tick_size=0.01, lot_size=100, multiplier=1.0, band_pct=5.0, tradable=1,
                           ref_px_ticks=10_000, mark_ticks=10_000)
STRATEGY_DEFAULTS = dict(state=ACTIVE, trip_cause=NO_TRIP, max_position=10_000, max_order_qty=5_000,
                         max_order_notional=1e6, max_open_orders=10, rate_per_s=100.0, burst=10.0, tokens=10.0,
                         tokens_ts_ns=NOW_NS, daily_loss_limit=1e4, ratio_window_ns=10**9, sides=SIDES_BOTH,
                         fill_window_ns=10**9)
ACCOUNT_DEFAULTS = dict(max_gross_notional=1e7, max_net_notional=1e7, daily_loss_limit=1e5, sides=SIDES_BOTH)
POSITION_DEFAULTS = dict(allowed=1)


class KernelState:
    """One engine arena; each region is an attribute named as in `arena.REGION_NAMES`."""

    def __init__(self, arena, layout):
        A.check_layout(arena, layout)
        self.arena, self.layout = arena, layout
        for name, view in zip(A.REGION_NAMES, A.numpy_views(arena, layout)):
            setattr(self, name, view)

    def copy(self):
        return KernelState(self.arena.copy(), self.layout.copy())

    # ---------------------------------------------------------------- rings, as the adapters use them
    def _push(self, ring, table, fields):
        index = rings.claim(self.cursors, ring, len(table))
        if index == rings.NO_ROOM:
            return False
        table[index] = np.zeros((), table.dtype)
        for name, value in fields.items():
            table[index][name] = value
        rings.publish(self.cursors, ring)
        return True

    def push_signal(self, **fields):
        """Write one signal at the head of the signal ring; False when the ring is full."""
        return self._push(A.RING_SIGNALS, self.signals, fields)

    def push_report(self, **fields):
        """Write one execution report at the head of the report ring; False when the ring is full."""
        return self._push(A.RING_REPORTS, self.reports, fields)

    def _take(self, ring, table):
        tail, head = rings.available(self.cursors, ring)
        taken = np.concatenate(rings.slices(table, tail, head) or (table[:0],))
        rings.release(self.cursors, ring, head)
        return taken

    def take_orders(self):
        """The orders waiting in the order ring (copies), oldest first; the ring is then empty."""
        return self._take(A.RING_ORDERS, self.orders)

    def take_rejects(self):
        return self._take(A.RING_REJECTS, self.rejects)

    def order_room(self):
        return rings.room(self.cursors, A.RING_ORDERS, len(self.orders))

    def live_orders(self):
        return [int(slot) for slot in np.flatnonzero(self.open_orders["live"])]

    def take_fills(self):
        return self._take(A.RING_FILLS, self.fills)


@dataclass(frozen=True)
class Engine:
    """The three batch kernels, compiled or as plain Python, called with a KernelState."""
    name: str
    process_signals_fn: object
    apply_mark_fn: object
    apply_reports_fn: object

    def process_signals(self, k, now_ns=NOW_NS, max_orders=None):
        max_orders = k.order_room() if max_orders is None else max_orders
        return self.process_signals_fn(k.arena, k.layout, now_ns, max_orders)

    def apply_mark(self, k, instrument, mark_ticks, now_ns=NOW_NS):
        """Market data moved `instrument`'s mark to mark_ticks at now_ns: P&L, exposure and breakers follow."""
        return self.apply_mark_fn(k.arena, k.layout, instrument, mark_ticks, now_ns)

    def apply_reports(self, k, now_ns=NOW_NS):
        return self.apply_reports_fn(k.arena, k.layout, now_ns)

    @staticmethod
    def kernel(module, name):
        """kernels.<module>.<name> as this engine runs it (the fixture has swapped in the Python source)."""
        return getattr(importlib.import_module(f"kernels.{module}"), name)


COMPILED = Engine("compiled", process_signals, apply_mark, apply_reports)
PYTHON = Engine("python", process_signals.py_func, apply_mark.py_func, apply_reports.py_func)


BATCH_MODULES = ("arena", "batch", "breakers", "codec", "lifecycle", "pipeline", "positions", "rings", "risk",
                 "sizing", "venue")


@pytest.fixture(scope="module", params=["compiled", "python"])
def engine(request):
    """The test body once on the compiled kernels, once on their Python source (helpers included)."""
    if request.param == "compiled":
        yield COMPILED
        return
    with pytest.MonkeyPatch.context() as patch:
        for module in (importlib.import_module(f"kernels.{name}") for name in BATCH_MODULES):
            for name, value in list(vars(module).items()):
                if callable(getattr(value, "py_func", None)):   # a numba dispatcher, or its Python twin
                    patch.setattr(module, name, getattr(value, "python", value.py_func))
        yield PYTHON


# -------------------------------------------------------------------------------------------- the builder
def _assign(table, values):
    for name, value in values.items():
        table[name] = value


def make_state(n_strategies=1, n_instruments=1, n_accounts=1, *, subscriptions=None, n_sources=2,
               order_table=64, signal_ring=64, order_ring=64, reject_ring=64, report_ring=64, fill_ring=64,
               rx_bytes=64, rx_chunks=8, tx_bytes=64, venue=None,
               instruments=None, strategies=None, accounts=None, positions=None, holdings=None):
    """A fresh engine state.

    subscriptions: one list of strategy ids per signal id (default: signal id s -> strategy s).
    instruments / strategies / accounts / positions: {field: value or one value per row} over the defaults.
    holdings: {(strategy, instrument): (qty, avg_px_ticks)} to start from; exposure and P&L are settled at
    the marks. Strategy s trades for account s % n_accounts unless `strategies` says otherwise.
    venue: the in-batch simulated venue's settings ({SimOmsConfig field: value}), None: no venue (an OMS link).
    """
    subscriptions = [[s] for s in range(n_strategies)] if subscriptions is None else subscriptions
    sub_ptr = np.cumsum([0] + [len(subs) for subs in subscriptions])
    layout, nbytes = A.plan(A.Sizes(
        rx_bytes=rx_bytes, rx_chunks=rx_chunks, tx_bytes=tx_bytes, signal_ring=signal_ring, order_ring=order_ring,
        reject_ring=reject_ring, report_ring=report_ring, fill_ring=fill_ring, instruments=n_instruments,
        strategies=n_strategies, accounts=n_accounts, order_table=order_table, signal_ids=len(subscriptions),
        subscriptions=int(sub_ptr[-1]), sources=n_sources, venue=int(venue is not None)))
    k = KernelState(np.zeros(nbytes, np.uint8), layout)

    k.transitions[:] = TRANSITIONS
    _assign(k.instruments, INSTRUMENT_DEFAULTS | (instruments or {}))
    _assign(k.strategies, STRATEGY_DEFAULTS | {"account": np.arange(n_strategies) % n_accounts} | (strategies or {}))
    _assign(k.accounts, ACCOUNT_DEFAULTS | (accounts or {}))
    _assign(k.positions, POSITION_DEFAULTS | (positions or {}))
    k.exposures["best_buy_ticks"] = NO_PRICE
    k.exposures["best_sell_ticks"] = NO_PRICE
    k.exposures["working_head"] = NO_SLOT
    k.free_slots[:] = np.arange(order_table)[::-1]
    k.scalars[A.S_FREE_TOP] = order_table
    k.scalars[A.S_STRATEGIES] = n_strategies
    k.scalars[A.S_ORDER_GEN] = 1
    k.scalars[A.S_NEXT_COOLDOWN_NS] = 0  # look at once: a test may start a strategy tripped
    k.scalars[A.S_MAX_FANOUT] = max((len(subs) for subs in subscriptions), default=0)
    k.sub_ptr[:] = sub_ptr
    k.sub_strategy[:] = [s for subs in subscriptions for s in subs]
    for (s, i), (qty, avg_px_ticks) in (holdings or {}).items():
        k.positions[s, i]["qty"] = qty
        k.positions[s, i]["avg_px_ticks"] = avg_px_ticks
    settle(k)
    if venue is not None:
        configure_venue(k, msgspec.convert(venue, SimOmsConfig))
    return k


def settle(k):
    """Exposure, account totals and unrealized P&L from the positions at the current marks (start-up only)."""
    n_strategies, n_instruments = k.positions.shape
    k.exposures["qty"] = 0
    for s in range(n_strategies):
        k.exposures[k.strategies[s]["account"]]["qty"] += k.positions[s]["qty"]
    for name in ("gross", "net", "unrealized"):
        k.accounts[name] = 0.0
    k.strategies["unrealized"] = 0.0
    for i in range(n_instruments):
        ins = k.instruments[i]
        unit = ins["mark_ticks"] * ins["tick_size"] * ins["multiplier"]
        for a in range(len(k.accounts)):
            e = k.exposures[a, i]
            e["gross"] = max(abs(e["qty"] + e["open_buy"]), abs(e["qty"] - e["open_sell"])) * unit
            e["net"] = (e["qty"] + e["open_buy"] - e["open_sell"]) * unit
            k.accounts[a]["gross"] += e["gross"]
            k.accounts[a]["net"] += e["net"]
        for s in range(n_strategies):
            p = k.positions[s, i]
            p["unrealized"] = (ins["mark_ticks"] - p["avg_px_ticks"]) * p["qty"] * ins["tick_size"] \
                * ins["multiplier"] if p["qty"] else 0.0
            k.strategies[s]["unrealized"] += p["unrealized"]
            k.accounts[k.strategies[s]["account"]]["unrealized"] += p["unrealized"]
    k.strategies["peak_pnl"] = k.strategies["realized"] + k.strategies["unrealized"] - k.strategies["fees"]


@pytest.fixture(name="make_state", scope="session")
def make_state_fixture():
    return make_state
