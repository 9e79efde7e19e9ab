"""engine/state.py: the arena sized and filled from config/test/basic, in the units kernels/dtypes.py states.

config/test/basic: instruments ESZ5 (id 0, tick 0.25, ref 6000.25), AAPL (id 1, tick 0.01, lot 100, ref 230.507,
not tradable); accounts futures (0), equities (1, kill switch on); strategies by name order
alpha (0: signals 2,0; ESZ5), beta (1: signals 5,2; AAPL, ESZ5; disabled), gamma (2: signal 3; AAPL).
"""
from pathlib import Path

import msgspec
import numpy as np
import pytest
from numba import literal_unroll, njit

from engine.config import load_config
from engine.state import EngineState, arena_sizes
from kernels import arena as A
from kernels.dtypes import (
    ACTIVE, BREAKER_ACTION_HALT, BREAKER_ACTION_REDUCE, N_COUNTERS, N_REASONS, N_TRIPS,
    NO_PRICE, NO_SLOT, NO_TRIP, ORDER_IOC, ORDER_LIMIT, ORDER_MARKET, READY, REASON_NAMES, TRIP_DRAWDOWN, TRIP_NAMES,
)
from kernels.lifecycle import N_EVENTS, N_STATES, TRANSITIONS

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "config" / "test" / "basic"
DEMO = ROOT / "config" / "demo"
ALPHA, BETA, GAMMA = 0, 1, 2
ESZ5, AAPL = 0, 1


@pytest.fixture
def state():
    return EngineState.load(BASIC)


# ------------------------------------------------------------------------------------------------- arena
def test_build_when_basic_config_then_every_region_has_its_configured_shape(state):
    expected = {
        "rx": (65_536,), "rx_sizes": (64,), "tx": (32_768,), "signals": (64,), "orders": (32,), "rejects": (16,),
        "reports": (128,), "cursors": (A.N_RINGS, 2), "instruments": (2,), "strategies": (4,), "positions": (4, 2),
        "accounts": (2,), "exposures": (2, 2), "open_orders": (8,), "free_slots": (8,), "sub_ptr": (7,),
        "sub_strategy": (8,), "source_seq": (3,), "counters": (N_COUNTERS,), "reason_counts": (4, N_REASONS),
        "trip_counts": (4, N_TRIPS), "transitions": (N_STATES, N_EVENTS), "scalars": (A.N_SCALARS,),
        "rx_times": (64,), "rx_sources": (64,), "role_drops": (A.MAX_SOURCES, 2), "fills": (4096,),
        "venue": (1,), "venue_orders": (0,), "venue_events": (0,), "venue_books": (0, 2),  # an OMS over TCP
    }
    assert set(expected) == set(A.REGION_NAMES)
    for region, name in enumerate(A.REGION_NAMES):
        view = getattr(state, name)
        assert view.shape == expected[name], name
        assert view.dtype == A.REGIONS[region].dtype, name
        assert view is state.views[region] is getattr(state.views, name)


def test_region_shapes_when_region_is_a_vector_then_shape_is_rows_by_one():
    shapes = A.shapes(arena_sizes(load_config(BASIC)))

    for region, (rows, cols) in zip(A.REGIONS, shapes):
        assert cols == 1 or region.cols is not None, region.name


def test_build_when_built_then_state_is_one_zeroed_cache_aligned_arena(state):
    assert state.arena.dtype == np.uint8 and state.arena.ndim == 1 and state.arena.flags.c_contiguous
    assert state.arena.ctypes.data % A.ALIGN == 0
    assert all(offset % A.ALIGN == 0 for offset in state.layout[:, 0])
    for name, view in zip(A.REGION_NAMES, state.views):
        assert (view.size == 0 or np.shares_memory(view, state.arena)) and view.flags.aligned, name
    for name in ("rx", "rx_sizes", "tx", "signals", "orders", "rejects", "reports", "cursors", "source_seq",
                 "counters", "reason_counts", "trip_counts"):
        assert not getattr(state, name).view(np.uint8).any(), name


@njit(_nrt=False)
def _compiled_view_geometry(arena, layout, out):
    """(address, nbytes, rows, cols) of each compiled view: `views` returns arrays only inside compiled code."""
    i = 0
    for view in literal_unroll(A.views(arena, layout)):
        out[i, 0] = view.ctypes.data
        out[i, 1] = view.nbytes
        out[i, 2] = view.shape[0]
        out[i, 3] = view.size // max(view.shape[0], 1)
        i += 1


def test_build_when_compiled_views_are_taken_then_they_match_the_numpy_views(state):
    geometry = np.zeros((A.N_REGIONS, 4), np.int64)
    _compiled_view_geometry(state.arena, state.layout, geometry)

    for name, mine, (address, nbytes, rows, cols) in zip(A.REGION_NAMES, state.views, geometry):
        assert mine.nbytes == nbytes and (nbytes == 0 or mine.ctypes.data == address), name  # empty: anywhere
        assert (mine.shape + (1,))[:2] == (rows, cols) or mine.size == 0, name


# ------------------------------------------------------------------------------------------------- tables
def test_build_when_instruments_configured_then_prices_are_ticks_and_marks_start_at_reference(state):
    es, aapl = state.instruments[ESZ5], state.instruments[AAPL]

    assert (es["tick_size"], es["lot_size"], es["multiplier"], es["band_pct"]) == (0.25, 1, 50.0, 5.0)
    assert (aapl["tick_size"], aapl["lot_size"], aapl["multiplier"], aapl["band_pct"]) == (0.01, 100, 1.0, 10.0)
    assert es["ref_px_ticks"] == es["mark_ticks"] == 24_001          # 6000.25 / 0.25
    assert aapl["ref_px_ticks"] == aapl["mark_ticks"] == 23_051      # round(230.507 / 0.01)
    assert (es["tradable"], aapl["tradable"]) == (1, 0)
    for field in ("bid_ticks", "ask_ticks", "last_ticks", "md_ts_ns"):  # 0: no market data yet
        assert (state.instruments[field] == 0).all(), field


def test_build_when_strategies_configured_then_limits_and_breakers_are_in_engine_units(state):
    alpha = state.strategies[ALPHA]

    assert (alpha["state"], alpha["breaker_action"], alpha["trip_cause"], alpha["order_type"]) == \
        (ACTIVE, BREAKER_ACTION_REDUCE, NO_TRIP, ORDER_IOC)
    assert (alpha["deploy"], alpha["account"]) == (1, 0)
    assert (alpha["max_position"], alpha["max_order_qty"], alpha["max_order_notional"]) == (12, 3, 1_500_000.0)
    assert (alpha["max_open_orders"], alpha["rate_per_s"], alpha["burst"]) == (4, 25.0, 7.0)
    assert alpha["daily_loss_limit"] == 60_000.0
    assert (alpha["max_consecutive_rejects"], alpha["ratio_min_orders"], alpha["max_reject_ratio"]) == (6, 12, 0.25)
    assert alpha["ratio_window_ns"] == 2_500 * 1_000_000
    assert alpha["cooldown_ns"] == 1_500 * 1_000_000
    assert (alpha["max_drawdown"], alpha["loss_limit"]) == (30_000.0, 45_000.0)
    assert alpha["tokens"] == alpha["burst"], "the token bucket starts full"
    assert alpha["peak_pnl"] == 0.0 and alpha["open_orders"] == 0 and alpha["orders"] == 0


def test_build_when_strategy_is_disabled_then_it_starts_ready_with_default_breaker_action(state):
    beta, gamma = state.strategies[BETA], state.strategies[GAMMA]

    assert (beta["state"], beta["breaker_action"], beta["order_type"], beta["account"]) == \
        (READY, BREAKER_ACTION_HALT, ORDER_MARKET, 1)
    assert beta["cooldown_ns"] == 0, "cooldown_ms = 0: only an explicit reset re-arms it"
    assert (gamma["state"], gamma["order_type"], gamma["trip_cause"]) == (ACTIVE, ORDER_LIMIT, NO_TRIP)


def test_build_when_strategy_lists_instruments_then_only_those_positions_are_allowed(state):
    assert state.positions["allowed"].tolist() == [[1, 0], [1, 1], [0, 1], [0, 0]]  # the spare row: none
    for field in ("qty", "open_buy", "open_sell", "realized", "fees"):
        assert (state.positions[field] == 0).all(), field


def test_build_when_accounts_configured_then_limits_kill_switch_and_empty_books_are_set(state):
    futures, equities = state.accounts[0], state.accounts[1]

    assert (futures["kill"], equities["kill"]) == (0, 1)
    assert (futures["max_gross_notional"], futures["max_net_notional"], futures["daily_loss_limit"]) == \
        (20_000_000.0, 8_000_000.0, 200_000.0)
    assert (equities["max_gross_notional"], equities["max_net_notional"], equities["daily_loss_limit"]) == \
        (3_000_000.0, 1_000_000.0, 50_000.0)
    assert (state.exposures["best_buy_ticks"] == NO_PRICE).all()
    assert (state.exposures["best_sell_ticks"] == NO_PRICE).all()
    assert (state.exposures["working_head"] == NO_SLOT).all()


def test_build_when_built_then_free_slot_stack_pops_slot_zero_first(state):
    assert state.free_slots.tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    top = state.scalars[A.S_FREE_TOP]
    assert top == 8 and state.free_slots[top - 1] == 0
    assert state.scalars[A.S_ORDER_GEN] == 1
    assert state.scalars[A.S_TX_LEN] == 0
    assert (state.open_orders["prev"] == NO_SLOT).all() and (state.open_orders["next"] == NO_SLOT).all()
    assert not state.open_orders["live"].any()


def test_build_when_signals_are_shared_then_subscriptions_are_csr_in_strategy_id_order(state):
    assert state.sub_ptr.tolist() == [0, 1, 1, 3, 4, 4, 5]
    assert state.sub_strategy.tolist()[:5] == [ALPHA, ALPHA, BETA, GAMMA, BETA]  # and room for one more
    assert [state.subscribers(g) for g in range(7)] == [[ALPHA], [], [ALPHA, BETA], [GAMMA], [], [BETA], []]


def test_build_when_built_then_transitions_are_a_writable_copy_of_the_lifecycle_table(state):
    assert (state.transitions == TRANSITIONS).all()
    assert state.transitions.flags.writeable and not np.shares_memory(state.transitions, TRANSITIONS)


def test_build_when_demo_config_then_it_builds_with_shared_instruments():
    state = EngineState.load(DEMO)

    assert len(state.strategy_names) == len(load_config(DEMO).strategies)
    assert (state.positions["allowed"][:, state.instrument_id("ESZ5")] == 1).sum() >= 2
    assert state.sub_ptr[-1] == sum(len(s.signals) for s in load_config(DEMO).strategies)
    assert (state.strategies["tokens"] == state.strategies["burst"]).all()
    assert state.scalars[A.S_STRATEGIES] == len(state.strategy_names) < len(state.strategies)  # room to register


def test_build_when_built_twice_then_arenas_are_identical_and_independent():
    config = load_config(BASIC)
    first, second = EngineState.build(config), EngineState.build(config)

    assert (first.layout == second.layout).all()
    assert first.arena.tobytes() == second.arena.tobytes()
    assert not np.shares_memory(first.arena, second.arena)


# ------------------------------------------------------------------------------------------------- names
def test_name_maps_when_built_then_names_and_ids_round_trip(state):
    assert state.strategy_names == ["alpha", "beta", "gamma"]
    assert state.instrument_symbols == ("ESZ5", "AAPL") and state.account_names == ("futures", "equities")
    assert [state.strategy_id(n) for n in state.strategy_names] == [0, 1, 2]
    assert (state.instrument_id("AAPL"), state.account_id("equities")) == (AAPL, 1)


def test_strategy_id_when_name_is_unknown_then_key_error_lists_the_known_names(state):
    with pytest.raises(KeyError, match="unknown strategy 'delta'; known: alpha, beta, gamma"):
        state.strategy_id("delta")


# ------------------------------------------------------------------------------------------------- snapshot
def test_snapshot_when_built_then_each_strategy_reports_its_configured_identity(state):
    report = state.snapshot()

    assert list(report) == ["alpha", "beta", "gamma"]
    assert {n: r["state"] for n, r in report.items()} == {"alpha": "ACTIVE", "beta": "READY", "gamma": "ACTIVE"}
    assert report["alpha"]["version"] == "1.2.0" and report["alpha"]["deploy"] == 1
    assert report["alpha"]["config_hash"] == load_config(BASIC).strategy_hashes[ALPHA]
    assert report["beta"]["account"] == "equities"
    assert list(report["beta"]["positions"]) == ["ESZ5", "AAPL"]
    assert report["alpha"]["rejects"] == {"total": 0, "by_reason": {}, "by_level": {}}
    assert report["alpha"]["breaker"] == {"trip_cause": None, "trips": {}, "consecutive_rejects": 0}


def test_snapshot_when_activity_recorded_then_it_reports_names_and_currency(state):
    s = ALPHA
    state.positions[s, ESZ5]["qty"], state.positions[s, ESZ5]["avg_px_ticks"] = 3, 24_002.0
    state.positions[s, ESZ5]["realized"], state.positions[s, ESZ5]["fees"] = 125.0, 7.5
    state.positions[s, AAPL]["qty"] = -100  # not allowed, but held: still reported
    state.strategies[s]["orders"], state.strategies[s]["rejects"] = 11, 4
    state.strategies[s]["realized"], state.strategies[s]["unrealized"] = 125.0, -50.0
    state.strategies[s]["trip_cause"] = TRIP_DRAWDOWN
    state.reason_counts[s, REASON_NAMES.index("qty_max")] = 3
    state.reason_counts[s, REASON_NAMES.index("rate")] = 2
    state.trip_counts[s, TRIP_DRAWDOWN] = 1

    alpha = state.snapshot()["alpha"]

    assert alpha["positions"]["ESZ5"]["qty"] == 3
    assert alpha["positions"]["ESZ5"]["avg_price"] == pytest.approx(6000.5)
    assert (alpha["positions"]["ESZ5"]["realized"], alpha["positions"]["ESZ5"]["fees"]) == (125.0, 7.5)
    assert alpha["positions"]["AAPL"] == {"qty": -100, "open_buy": 0, "open_sell": 0, "avg_price": 0.0,
                                          "realized": 0.0, "unrealized": 0.0, "fees": 0.0, "allowed": False}
    assert alpha["pnl"] == {"realized": 125.0, "unrealized": -50.0, "fees": 0.0}
    assert alpha["orders"] == 11
    assert alpha["rejects"] == {"total": 4, "by_reason": {"qty_max": 3, "rate": 2}, "by_level": {"strategy": 5}}
    assert alpha["breaker"]["trip_cause"] == TRIP_NAMES[TRIP_DRAWDOWN] == "drawdown"
    assert alpha["breaker"]["trips"] == {"drawdown": 1}


def test_snapshot_when_encoded_then_it_is_plain_json(state):
    report = state.snapshot()

    assert msgspec.json.decode(msgspec.json.encode(report)) == report
