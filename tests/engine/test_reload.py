"""Config hot reload (engine/reload.py) in process: the key table covers the schema, the diff becomes the
commands, restart-only keys and broken files refuse everything, the commands go through the command path."""
import asyncio
import tomllib
import typing
from pathlib import Path

import msgspec
import pytest

from engine import service as service_module
from engine.commands import Register, SetLimits, Transition
from engine.config import load_config
from engine.config.loader import load
from engine.config.schema import Account, Instrument, Strategy
from engine.driver import run_event
from engine.reload import DEPLOY, IDENTITY, KEYS, RESTART, SET_LIMITS, ReloadRefused, classify, plan
from engine.state import EngineState
from tests.e2e.e2e_kit import derive_config, toml


def _leaves(struct_type, prefix=""):
    """Every key path of a config Struct, nested tables followed."""
    for name in struct_type.__struct_fields__:
        hint = typing.get_type_hints(struct_type)[name]
        kinds = [t for t in typing.get_args(hint) or (hint,) if isinstance(t, type) and issubclass(t, msgspec.Struct)]
        if kinds:
            yield from _leaves(kinds[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


@pytest.mark.parametrize("file, struct_type", [("accounts.toml", Account), ("strategies/*.toml", Strategy)])
def test_keys_when_a_schema_key_exists_then_the_table_says_whether_it_is_live(file, struct_type):
    unlisted = [key for key in _leaves(struct_type) if (file, key) not in KEYS]
    assert unlisted == []


def test_keys_when_engine_or_instruments_change_then_restart_only():
    assert classify("engine.toml", "rings.orders")[0] == RESTART
    assert classify("engine.toml", "api.tokens")[0] == RESTART
    assert classify("instruments.toml", "instruments[ESZ5].tick_size")[0] == RESTART
    assert {key for key in Instrument.__struct_fields__} and ("instruments.toml", "*") in KEYS
    assert classify("strategies/x.toml", "limits.max_order_qty")[0] == SET_LIMITS
    assert classify("strategies/x.toml", "version")[0] == DEPLOY
    assert classify("strategies/x.toml", "name")[0] == IDENTITY
    assert classify("strategies/x.toml", "account")[0] == RESTART


@pytest.fixture
def config_dir(tmp_path):
    return derive_config(tmp_path / "config", keep={"momentum", "pairs"})


def _plan(config_dir, edit):
    state = EngineState.build(load_config(config_dir))
    edit(config_dir)
    config, problems = load(state.config.engine_file)
    assert problems == []
    return plan(state, config, "tester")


def _replace(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def test_plan_when_nothing_changed_then_no_change_and_no_command(config_dir):
    assert _plan(config_dir, lambda d: None) == ([], [], [])


def test_plan_when_a_version_changes_then_deploy_and_when_only_a_limit_then_set_limits(config_dir):
    def edit(d):
        _replace(d / "strategies" / "momentum.toml", 'version = "1.2.0"', 'version = "1.3.0"')
        _replace(d / "strategies" / "pairs.toml", "max_open_orders = ", "max_open_orders = 1")
    changes, commands, refusals = _plan(config_dir, edit)
    assert refusals == []
    by_type = {type(c).__name__: c for c, _, _ in commands}
    assert by_type["Deploy"].strategy == "momentum" and by_type["Deploy"].file == "momentum.toml"
    limits = by_type["SetLimits"]
    assert limits.strategy == "pairs" and list(limits.values) == ["max_open_orders"]
    assert {(c.key, c.before, c.after) for c in changes if c.command == "deploy momentum"} == {
        ("version", "1.2.0", "1.3.0")}
    assert {c.actor for c, _, _ in commands} == {"tester"}


def test_plan_when_a_file_is_added_or_removed_then_register_or_retire(config_dir):
    def edit(d):
        text = (d / "strategies" / "pairs.toml").read_text()
        (d / "strategies" / "pairs2.toml").write_text(text.replace('name = "pairs"', 'name = "pairs2"'))
        (d / "strategies" / "momentum.toml").unlink()
    changes, commands, refusals = _plan(config_dir, edit)
    assert refusals == []
    assert [(type(c), getattr(c, "file", None) or c.strategy) for c, _, _ in commands] == [
        (Register, "pairs2.toml"), (Transition, "momentum")]
    assert commands[1][0].action == "retire"
    assert [(c.file, c.key, c.how) for c in changes] == [("strategies/pairs2.toml", "name", IDENTITY),
                                                         ("strategies/momentum.toml", "name", IDENTITY)]


def test_plan_when_a_restart_only_key_changes_then_refused_with_the_key_named(config_dir):
    def edit(d):
        _replace(d / "engine.toml", "max_open_orders = 4096", "max_open_orders = 2048")
        _replace(d / "instruments.toml", "tick_size = 0.25", "tick_size = 0.5")
        _replace(d / "strategies" / "pairs.toml", 'account = "', 'account = "x')
    state = EngineState.build(load_config(config_dir))
    edit(config_dir)
    config, problems = load(state.config.engine_file)
    assert problems and "unknown account" in problems[0]  # a strategy naming no account does not load at all
    _replace(config_dir / "strategies" / "pairs.toml", 'account = "x', 'account = "')
    config, problems = load(state.config.engine_file)
    changes, commands, refusals = plan(state, config, "tester")
    assert any(r.startswith("engine.toml: max_open_orders is restart-only") and "4096 -> 2048" in r
               for r in refusals), refusals
    assert any(r.startswith("instruments.toml: instruments[ESZ5].tick_size is restart-only") for r in refusals)


def test_plan_when_an_account_limit_changes_then_set_limits_and_a_kill_switch_is_restart_only(config_dir):
    state = EngineState.build(load_config(config_dir))
    name = state.account_specs[0].name
    path = config_dir / "accounts.toml"
    accounts = tomllib.loads(path.read_text())
    accounts["accounts"][0].update(daily_loss_limit=12345.0, kill_switch=True)
    path.write_text(toml(accounts))
    config, problems = load(state.config.engine_file)
    changes, commands, refusals = plan(state, config, "tester")
    assert [(type(c), c.account, c.values) for c, _, _ in commands] == [(SetLimits, name,
                                                                         {"daily_loss_limit": 12345.0})]
    assert refusals == [f"accounts.toml: accounts[{name}].kill_switch is restart-only (read at start; throw it live "
                        f"with `ctl kill --account`): False -> True; restart the engine to take it"]


@pytest.mark.parametrize("ids", [None, "reload-7"])
def test_reload_when_applied_then_each_command_is_journaled_with_the_actor_and_a_rerun_changes_nothing(
        tmp_path, ids):
    config_dir = derive_config(tmp_path / "config", keep={"momentum", "pairs"},
                               engine={"api": {"enabled": False}, "journal": {"enabled": False}})
    svc = service_module.build(load_config(config_dir))

    async def go():
        stop = asyncio.Event()
        driver = asyncio.get_running_loop().create_task(run_event(svc.engine, stop))
        try:
            _replace(config_dir / "strategies" / "momentum.toml", 'version = "1.2.0"', 'version = "1.3.0"')
            first = await svc.reloader.reload("ops (operator)", on_engine_thread=True, key=ids)
            again = await svc.reloader.reload("ops (operator)", on_engine_thread=True)
            (config_dir / "strategies" / "pairs.toml").write_text("name = [")
            with pytest.raises(ReloadRefused) as refused:
                await svc.reloader.reload("ops (operator)", on_engine_thread=True)
            return first, again, refused.value
        finally:
            stop.set()
            await driver
    try:
        first, again, refused = asyncio.run(go())
    finally:
        svc.close()
    assert first.ok and [(r.command, r.ok, r.detail["to"]["version"]) for r in first.commands] == [
        ("deploy", True, "1.3.0")]
    assert first.commands[0].id == ("reload-7.1" if ids else first.commands[0].id)
    assert again.ok and again.changes == [] and again.commands == []
    assert refused.invalid and "pairs.toml" in refused.result.problems[0] and not refused.result.ok
    state = svc.engine.state
    assert state.deploys[state.strategy_id("momentum")][-1].version == "1.3.0"
    assert state.deploys[state.strategy_id("momentum")][-1].actor == "ops (operator)"
    assert svc.engine.control.results[first.commands[0].id] == first.commands[0]


def test_keys_when_documented_then_docs_api_md_has_the_table_row_for_row():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    missing = [f"| `{file}` | `{key}` | {how} |" for (file, key), (how, _) in KEYS.items()
               if f"| `{file}` | `{key}` | {how} |" not in doc]
    assert missing == []


def test_plan_when_a_token_changes_then_restart_only_and_neither_secret_is_shown(tmp_path):
    old, new = "old-secret-token-0123456789", "new-secret-token-0123456789"
    config_dir = derive_config(tmp_path / "config", keep={"momentum"},
                               engine={"api": {"tokens": [{"name": "dash", "role": "read", "token": old}]}})
    changes, commands, refusals = _plan(config_dir, lambda d: _replace(d / "engine.toml", old, new))
    assert [(c.key, c.before, c.after, c.how) for c in changes] == [("api.tokens", "(not shown)", "(not shown)",
                                                                    RESTART)]
    assert refusals[0].startswith("engine.toml: api.tokens is restart-only") and commands == []
    shown = msgspec.json.encode([changes, refusals])
    assert old.encode() not in shown and new.encode() not in shown
