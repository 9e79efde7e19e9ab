"""engine/control.py: commands checked against the lifecycle table, the names and the config schema; refused
with a clear error and nothing changed, or journaled and applied; a retried id applied once.

On config/test/basic (see tests/engine/test_state.py): alpha ACTIVE (futures), beta READY (equities, whose kill
switch is on in accounts.toml), gamma ACTIVE (equities); the OMS is a TCP link, here a sink that keeps what it
is sent.
"""
import shutil

import msgspec
import numpy as np
import pytest

from engine.commands import (
    CancelUnsent, Deploy, HaltAll, KillSwitch, Register, Rollback, SetLimits, Shadow, Transition, decode_command,
)
from engine.config import load_config
from engine.driver import Engine
from engine.state import EngineState
from kernels.dtypes import (
    ACTIVE, C_ORDERS, HALTED, KILL_ACCOUNT, KILL_GLOBAL, MSG_CANCEL, NO_TRIP, PAUSED, READY, REDUCING, RETIRED,
    SIGNAL_ORDER, TRIP_DRAWDOWN,
)
from kernels.arena import S_STRATEGIES
from sim.sink import NullOms
from tests.engine.test_state import ALPHA, BASIC, BETA, GAMMA
from wire.frames import encode_frame, iter_frames
from wire.schema import Signal

NOW = 1_700_000_000_000_000_000


class KeepingOms(NullOms):
    """A sink that keeps the frames it was sent."""

    def __init__(self):
        super().__init__()
        self.frames = []

    def send(self, frames):
        self.frames += list(iter_frames(bytes(frames)))
        return super().send(frames)


@pytest.fixture
def engine():
    return Engine(EngineState.load(BASIC), [], KeepingOms(), clock=lambda: NOW)


def apply(engine, command):
    return engine.control.apply(command, NOW)


def states(engine):
    return [int(x) for x in engine.state.strategies["state"][:len(engine.state.strategy_names)]]


# ------------------------------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("name, action, after", [
    ("alpha", "pause", PAUSED), ("alpha", "reduce_only", REDUCING), ("alpha", "halt", HALTED),
    ("alpha", "deactivate", READY), ("beta", "activate", ACTIVE), ("beta", "retire", RETIRED),
])
def test_transition_when_legal_then_state_changes_and_the_result_says_from_where(engine, name, action, after):
    result = apply(engine, Transition(strategy=name, action=action))

    assert result.ok and result.error is None
    assert engine.state.strategies[engine.state.strategy_id(name)]["state"] == after
    assert result.detail["to"] == ("PAUSED", "REDUCING", "HALTED", "READY", "ACTIVE", "RETIRED")[
        (PAUSED, REDUCING, HALTED, READY, ACTIVE, RETIRED).index(after)]


@pytest.mark.parametrize("name, action, error", [
    ("alpha", "activate", "cannot activate a strategy in state ACTIVE"),
    ("alpha", "reset", "cannot reset a strategy in state ACTIVE"),
    ("alpha", "retire", "cannot retire a strategy in state ACTIVE"),
    ("beta", "pause", "cannot pause a strategy in state READY"),
    ("beta", "resume", "cannot resume a strategy in state READY: resume is for PAUSED"),
    ("delta", "pause", "unknown strategy 'delta'; known: alpha, beta, gamma"),
])
def test_transition_when_illegal_or_unknown_then_refused_with_the_reason_and_nothing_changes(engine, name, action,
                                                                                             error):
    before = engine.state.arena.copy()

    result = apply(engine, Transition(strategy=name, action=action))

    assert not result.ok and error in result.error and result.seq == 0
    assert np.array_equal(engine.state.arena, before)


def test_transition_when_paused_then_resume_makes_it_active_and_keeps_its_breaker_counts(engine):
    engine.state.strategies[ALPHA]["consecutive_rejects"] = 4
    apply(engine, Transition(strategy="alpha", action="pause"))

    assert apply(engine, Transition(strategy="alpha", action="resume")).ok

    assert engine.state.strategies[ALPHA]["state"] == ACTIVE
    assert engine.state.strategies[ALPHA]["consecutive_rejects"] == 4


def test_transition_when_a_tripped_strategy_is_reset_then_its_breakers_start_afresh_from_now(engine):
    row = engine.state.strategies[ALPHA]
    row["state"], row["trip_cause"], row["tripped_at_ns"] = HALTED, TRIP_DRAWDOWN, 123
    row["consecutive_rejects"], row["window_orders"], row["window_rejects"] = 6, 20, 9
    row["realized"], row["fees"] = 50.0, 2.0

    assert apply(engine, Transition(strategy="alpha", action="reset")).detail == \
        {"strategy": "alpha", "from": "HALTED", "to": "READY"}

    assert (row["trip_cause"], row["tripped_at_ns"], row["consecutive_rejects"]) == (NO_TRIP, 0, 0)
    assert (row["window_orders"], row["window_rejects"], row["window_start_ns"]) == (0, 0, NOW)
    assert row["peak_pnl"] == 48.0  # the drawdown breaker measures from the P&L at the reset


def test_command_when_retried_with_the_same_id_then_applied_once_and_the_first_result_returned(engine):
    first = apply(engine, Transition(id="op-7", strategy="alpha", action="pause"))
    apply(engine, Transition(strategy="alpha", action="resume"))

    again = apply(engine, Transition(id="op-7", strategy="alpha", action="pause"))

    assert again.repeated and (again.ok, again.detail) == (first.ok, first.detail)
    assert engine.state.strategies[ALPHA]["state"] == ACTIVE  # the retry did not pause it again


def test_command_when_decoded_from_json_then_a_bad_field_is_named():
    assert decode_command(b'{"command": "transition", "strategy": "alpha", "action": "pause"}') == \
        Transition(strategy="alpha", action="pause")
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value .explode. - at `\$.action`"):
        decode_command(b'{"command": "transition", "strategy": "alpha", "action": "explode"}')
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'launch'"):
        decode_command(b'{"command": "launch", "strategy": "alpha"}')


# ------------------------------------------------------------------------------------------------- limits
def test_set_limits_when_valid_then_the_arena_and_the_running_spec_follow(engine):
    result = apply(engine, SetLimits(strategy="alpha", values={"max_order_qty": 3, "cooldown_ms": 250,
                                                               "action": "reduce", "max_position": 7}))

    assert result.ok, result.error
    row = engine.state.strategies[ALPHA]
    assert (row["max_order_qty"], row["cooldown_ns"], row["breaker_action"], row["max_position"]) == \
        (3, 250_000_000, 1, 7)
    spec = engine.state.deploys[ALPHA][-1].spec
    assert (spec.limits.max_order_qty, spec.breakers.cooldown_ms, spec.sizing.max_position) == (3, 250, 7)


@pytest.mark.parametrize("command, error", [
    (SetLimits(strategy="alpha", values={"max_order_qty": 0}), "Expected `int` >= 1 - at `$.limits.max_order_qty`"),
    (SetLimits(strategy="alpha", values={"max_orders": 3}), "not a strategy limit: max_orders; settable:"),
    (SetLimits(strategy="alpha", values={"action": "explode"}), "at `$.breakers.action`"),
    (SetLimits(account="futures", values={"max_gross_notional": -1.0}), "at `$.max_gross_notional`"),
    (SetLimits(account="futures", values={"kill_switch": True}), "not an account limit: kill_switch"),
    (SetLimits(strategy="alpha", account="futures", values={"burst": 3}), "either a strategy or an account"),
    (SetLimits(account="nobody", values={"daily_loss_limit": 3.0}), "unknown account 'nobody'"),
])
def test_set_limits_when_a_value_or_key_is_wrong_then_refused_naming_it_and_nothing_changes(engine, command, error):
    before = engine.state.arena.copy()
    spec = engine.state.deploys[ALPHA][-1].spec

    result = apply(engine, command)

    assert not result.ok and error in result.error, result.error
    assert np.array_equal(engine.state.arena, before) and engine.state.deploys[ALPHA][-1].spec == spec


def test_set_limits_when_an_account_is_changed_then_its_row_follows(engine):
    assert apply(engine, SetLimits(account="futures", values={"max_net_notional": 1234.5})).ok
    assert engine.state.accounts[0]["max_net_notional"] == 1234.5


# ------------------------------------------------------------------------------------------------- kill switches
def working_order(engine, slot, strategy, account):
    o = engine.state.open_orders[slot]
    o["live"], o["order_id"], o["strategy"], o["account"], o["deploy"] = 1, (5 << 24) | slot, strategy, account, 1


def test_kill_switch_when_a_strategy_is_killed_then_its_working_orders_get_cancel_requests(engine):
    working_order(engine, 0, ALPHA, 0)
    working_order(engine, 1, GAMMA, 1)

    result = apply(engine, KillSwitch(scope="strategy", name="alpha", on=True))
    engine.step(NOW)

    assert result.detail["cancel_requests"] == 1 and engine.state.strategies[ALPHA]["kill"] == 1
    cancels = [body for msg_type, body in engine.oms.frames if msg_type == MSG_CANCEL]
    assert [c.order_id for c in cancels] == [(5 << 24) | 0]
    assert apply(engine, KillSwitch(scope="strategy", name="alpha", on=False)).ok
    assert engine.state.strategies[ALPHA]["kill"] == 0


def test_kill_switch_when_global_is_turned_off_then_an_account_switch_set_in_config_stays_on(engine):
    accounts = engine.state.accounts
    assert list(accounts["kill"]) == [0, KILL_ACCOUNT]  # equities: kill_switch = true in accounts.toml

    apply(engine, KillSwitch(scope="global", on=True))
    assert list(accounts["kill"]) == [KILL_GLOBAL, KILL_ACCOUNT | KILL_GLOBAL]
    apply(engine, KillSwitch(scope="global", on=False))

    assert list(accounts["kill"]) == [0, KILL_ACCOUNT]


@pytest.mark.parametrize("command, error", [
    (KillSwitch(scope="global", name="futures", on=True), "takes no name"),
    (KillSwitch(scope="account", on=True), "name the account"),
    (KillSwitch(scope="strategy", name="delta", on=True), "unknown strategy 'delta'"),
])
def test_kill_switch_when_the_scope_is_wrong_then_refused(engine, command, error):
    result = apply(engine, command)
    assert not result.ok and error in result.error


# ------------------------------------------------------------------------------------------------- engine policy
def test_halt_all_when_the_oms_link_is_lost_then_trading_strategies_move_by_policy(engine):
    engine.state.strategies[GAMMA]["state"] = PAUSED

    result = apply(engine, HaltAll(actor="engine", policy="reduce", reason="OMS link lost"))

    assert states(engine) == [REDUCING, READY, PAUSED] and result.detail["moved"] == ["alpha"]


def test_cancel_unsent_when_orders_never_left_then_the_books_release_them(engine):
    state = engine.state
    working_order(engine, 3, ALPHA, 0)
    state.strategies[ALPHA]["open_orders"] = 1

    result = apply(engine, CancelUnsent(actor="engine", order_ids=[(5 << 24) | 3, (9 << 24) | 4]))

    assert result.detail == {"canceled": 1} and state.open_orders[3]["live"] == 0
    assert state.strategies[ALPHA]["open_orders"] == 0


def test_command_when_submitted_from_another_thread_then_the_next_step_applies_it(engine):
    future = engine.control.submit(Transition(strategy="gamma", action="pause"))
    assert not future.done() and engine.control.pending == 1

    engine.step(NOW)

    assert future.result(timeout=1).ok and engine.state.strategies[GAMMA]["state"] == PAUSED
    assert engine.state.strategies[BETA]["state"] == READY


# ------------------------------------------------------------------------------------------------- versions
@pytest.fixture
def editable(tmp_path):
    """An engine on a copy of config/test/basic whose strategy files the test may edit; (engine, strategies dir)."""
    shutil.copytree(BASIC, tmp_path / "basic")
    config = load_config(tmp_path / "basic")
    return Engine(EngineState.build(config), [], KeepingOms(), clock=lambda: NOW), tmp_path / "basic" / "strategies"


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_register_when_a_new_file_is_given_then_it_takes_the_spare_row_and_hears_its_signals(editable):
    engine, strategies = editable
    text = (strategies / "alpha.toml").read_text().replace('name = "alpha"', 'name = "delta"')
    (strategies / "delta.toml").write_text(text.replace("signals = [2, 0]", "signals = [4]"))

    result = apply(engine, Register(file="delta.toml"))

    assert result.ok, result.error
    assert result.detail == {"strategy": "delta", "id": 3, "version": "1.2.0", "deploy": 1, "state": "ACTIVE"}
    state = engine.state
    assert state.strategy_names[3] == "delta" and state.strategy_id("delta") == 3
    assert state.subscribers(4) == [3] and state.scalars[S_STRATEGIES] == 4
    again = apply(engine, Register(file="delta.toml"))
    assert not again.ok and "registered already" in again.error
    (strategies / "epsilon.toml").write_text(text.replace('name = "alpha"', 'name = "epsilon"')
                                             .replace('name = "delta"', 'name = "epsilon"'))
    full = apply(engine, Register(file="epsilon.toml"))
    assert not full.ok and "no room for another strategy" in full.error


@pytest.mark.parametrize("file, error", [
    ("nothing.toml", "file not found"),
    ("../alpha.toml", "not a strategy file name"),
    ("bad.toml", "at $.limits.max_order_qty: Expected int >= 1, got 0"),
    ("far.toml", "at $.signals[0]: Expected a signal id <= 5 (engine.toml max_signal_id), got 9"),
])
def test_register_when_the_file_is_wrong_then_refused_naming_file_and_key(editable, file, error):
    engine, strategies = editable
    text = (strategies / "alpha.toml").read_text().replace('name = "alpha"', 'name = "delta"')
    (strategies / "bad.toml").write_text(text.replace("max_order_qty = 3", "max_order_qty = 0"))
    (strategies / "far.toml").write_text(text.replace("signals = [2, 0]", "signals = [9]"))
    before = engine.state.arena.copy()

    result = apply(engine, Register(file=file))

    assert not result.ok and error in result.error, result.error
    assert np.array_equal(engine.state.arena, before) and len(engine.state.strategy_names) == 3


def test_deploy_when_the_file_changed_then_the_next_deploy_runs_and_the_position_stays(editable):
    engine, strategies = editable
    state = engine.state
    state.positions[ALPHA, 0]["qty"] = 5
    edit(strategies / "alpha.toml", 'version = "1.2.0"', 'version = "1.3.0"')
    edit(strategies / "alpha.toml", "max_order_qty = 3", "max_order_qty = 9")
    edit(strategies / "alpha.toml", "signals = [2, 0]", "signals = [2, 1]")

    result = apply(engine, Deploy(strategy="alpha", actor="ops"))

    assert result.ok and result.detail == {"strategy": "alpha", "from": {"version": "1.2.0", "deploy": 1},
                                           "to": {"version": "1.3.0", "deploy": 2}}
    row = state.strategies[ALPHA]
    assert (row["deploy"], row["max_order_qty"], row["state"]) == (2, 9, ACTIVE)
    assert state.positions[ALPHA, 0]["qty"] == 5  # positions belong to the name
    assert state.subscribers(1) == [ALPHA] and state.subscribers(0) == []
    assert [(d.number, d.version, d.actor) for d in state.deploys[ALPHA]] == [(1, "1.2.0", "config"),
                                                                              (2, "1.3.0", "ops")]
    same = apply(engine, Deploy(strategy="alpha"))
    assert not same.ok and "nothing to deploy" in same.error and "1.3.0 (deploy 2)" in same.error

    back = apply(engine, Rollback(strategy="alpha"))

    assert back.ok and back.detail["to"] == {"version": "1.2.0", "deploy": 3}
    assert back.detail["note"] == "rollback to deploy 1"
    assert (row["deploy"], row["max_order_qty"]) == (3, 3) and state.subscribers(0) == [ALPHA]


@pytest.mark.parametrize("change, error", [
    (('account = "futures"', 'account = "equities"'), "cannot move alpha from account 'futures'"),
    (('name = "alpha"', 'name = "zeta"'), "holds strategy 'zeta', not 'alpha'"),
    (("max_position = 12", "max_position = -1"), "at $.sizing.max_position"),
])
def test_deploy_when_the_new_version_is_not_acceptable_then_the_running_one_keeps_trading(editable, change, error):
    engine, strategies = editable
    edit(strategies / "alpha.toml", *change)
    before = engine.state.arena.copy()

    result = apply(engine, Deploy(strategy="alpha"))

    assert not result.ok and error in result.error, result.error
    assert np.array_equal(engine.state.arena, before) and len(engine.state.deploys[ALPHA]) == 1


def test_rollback_when_there_is_nothing_to_go_back_to_then_refused(editable):
    engine, _ = editable
    assert "nothing to roll back to" in apply(engine, Rollback(strategy="alpha")).error
    assert "has no deploy 7" in apply(engine, Rollback(strategy="alpha", to=7)).error
    assert "is the running one" in apply(engine, Rollback(strategy="alpha", to=1)).error


# ------------------------------------------------------------------------------------------------- shadows
def feed_signals(engine, *signals):
    """Signal frames through the engine's own batch, as if they had just arrived."""
    data = b"".join(encode_frame(Signal(0, seq, signal_id, instrument, SIGNAL_ORDER, value, price, NOW, 0))
                    for seq, signal_id, instrument, value, price in signals)
    engine.feed(NOW, 1, [len(data)], data)
    engine.decide(NOW)


def test_shadow_when_started_then_it_decides_beside_the_live_version_and_places_nothing(editable):
    engine, strategies = editable
    state = engine.state
    edit(strategies / "alpha.toml", 'version = "1.2.0"', 'version = "2.0.0"')
    edit(strategies / "alpha.toml", "max_order_qty = 3", "max_order_qty = 1")
    feed_signals(engine, (1, 0, 0, 2.0, 6000.25))  # before the shadow: not in the comparison

    result = apply(engine, Shadow(strategy="alpha", on=True))

    assert result.ok, result.error
    shadow = state.strategy_id("alpha.shadow1")
    assert state.strategies[shadow]["shadow_of"] == ALPHA + 1 and state.subscribers(0) == [ALPHA, shadow]
    orders_before = int(state.counters[C_ORDERS])
    feed_signals(engine, (2, 0, 0, 2.0, 6000.25), (3, 0, 0, 1.0, 6000.25))
    assert int(state.counters[C_ORDERS]) == orders_before + 2  # the live version's; none from the shadow
    report = state.snapshot()["alpha"]["shadows"][0]
    assert report["running"] and report["version"] == "2.0.0"
    assert report["live"]["orders"] == 2 and report["live"]["buy_qty"] == 3
    assert report["shadow"]["orders"] == 1 and report["shadow"]["buy_qty"] == 1  # qty 2 is over its max of 1
    assert report["shadow"]["by_reason"] == {"qty_max": 1}
    assert state.snapshot()["alpha.shadow1"]["shadow_of"] == "alpha"
    assert not apply(engine, Shadow(strategy="alpha", on=True)).ok  # one at a time

    promoted = apply(engine, Deploy(strategy="alpha"))

    assert promoted.ok and state.strategies[shadow]["state"] == RETIRED and state.subscribers(0) == [ALPHA]
    assert not state.snapshot()["alpha"]["shadows"][0]["running"]
    assert "has no shadow running" in apply(engine, Shadow(strategy="alpha", on=False)).error
