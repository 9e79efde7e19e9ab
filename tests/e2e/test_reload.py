"""Config hot reload against the real `orchestrator run`: a changed strategy file deployed, a new one registered,
a changed limit set, all by `ctl reload`, POST /reload or SIGHUP, each command journaled with who asked; a broken
file, a restart-only key or a strategy that cannot retire refuse the whole reload and the engine trades on
unchanged."""
import json
import signal

import pytest

from tests.e2e.e2e_kit import market_data_frame, signal_frame
from tests.e2e.test_api import OPS_ENV, OPS_SECRET, READ_SECRET, Api, api_config, applied, ctl, start


def _replace(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def _trades(procs, engine, api, seq):
    """A quote and a signal for momentum: the engine decides it (an order or a reject), so it trades."""
    before = api.get("/counters")["counters"]
    procs.udp(engine).send(market_data_frame(), signal_frame(seq, price=6000.25))
    engine.wait_status(lambda r: r["counters"]["signals"] > before["signals"], f"signal {seq} decided")
    after = api.get("/counters")["counters"]
    return after["orders"] + after["rejects"] > before["orders"] + before["rejects"]


def test_reload_when_files_change_then_ctl_and_the_api_deploy_register_and_set_limits_as_the_operator(procs,
                                                                                                     tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    strategies = config / "strategies"
    _replace(strategies / "momentum.toml", 'version = "1.2.0"', 'version = "1.3.0"')

    code, out, err = ctl(procs, engine, "reload")
    assert code == 0, err
    assert "momentum.toml" in out and "version" in out and "deploy momentum" in out and "1.3.0" in out
    detail = api.get("/strategies/momentum")
    assert (detail["version"], detail["deploy"], detail["state"]) == ("1.3.0", 2, "ACTIVE")
    assert detail["deploys"][-1]["actor"] == "ops (operator)"

    pairs = (strategies / "pairs.toml").read_text()
    (strategies / "pairs2.toml").write_text(pairs.replace('name = "pairs"', 'name = "pairs2"'))
    _replace(strategies / "pairs.toml", "max_open_orders = ", "max_open_orders = 1")
    _replace(config / "accounts.toml", "daily_loss_limit = 1_000_000.0", "daily_loss_limit = 200_000.0")
    status, result = api.post("/reload", key="reload-2")
    assert status == 200 and result["ok"], result
    assert [(c["command"], c["ok"], c["id"]) for c in result["commands"]] == [
        ("set_limits", True, "reload-2.1"), ("set_limits", True, "reload-2.2"), ("register", True, "reload-2.3")]
    assert {(c["file"], c["key"], c["how"]) for c in result["changes"]} == {
        ("accounts.toml", "accounts[futures].daily_loss_limit", "set_limits"),
        ("strategies/pairs.toml", "limits.max_open_orders", "set_limits"),
        ("strategies/pairs2.toml", "name", "identity")}
    assert api.get("/accounts")["futures"]["limits"]["daily_loss_limit"] == 200_000.0
    assert api.get("/strategies")["pairs2"]["state"] == "READY"
    limit = result["changes"][[c["key"] for c in result["changes"]].index("limits.max_open_orders")]["after"]
    assert api.get("/strategies/pairs")["limits"]["limits"]["max_open_orders"] == limit
    assert api.get("/reload")["commands"] == result["commands"]

    code, out, err = ctl(procs, engine, "reload")  # what runs is what the files say now
    assert code == 0 and "nothing to change" in out, out + err
    assert [(type(c).__name__, c.actor) for c in applied(config)] == [
        ("Deploy", "ops (operator)"), ("SetLimits", "ops (operator)"), ("SetLimits", "ops (operator)"),
        ("Register", "ops (operator)")]
    status, answer = api.post("/reload", token=READ_SECRET)
    assert status == 403 and len(applied(config)) == 4
    assert engine.report()["strategies"]["pairs2"]["state"] == "READY"

    # restarted, it recovers from its journal: what the reloads did runs, and it is what the files say
    again = procs.engine(config, name="again", env=OPS_ENV)
    code, out, err = ctl(procs, again, "reload")
    assert code == 0 and "nothing to change" in out, out + err
    assert Api(again).get("/strategies/momentum")["version"] == "1.3.0"


def test_reload_when_a_file_is_broken_or_a_key_restart_only_then_refused_whole_and_the_engine_trades_on(procs,
                                                                                                     tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    strategies = config / "strategies"
    assert _trades(procs, engine, api, 1)
    before = api.get("/strategies")

    _replace(strategies / "momentum.toml", 'version = "1.2.0"', 'version = "1.3.0"')  # fine, but beside:
    (strategies / "pairs.toml").write_text((strategies / "pairs.toml").read_text() + "\n[limits\n")  # broken TOML
    status, refused = api.post("/reload")
    assert status == 422 and refused["error"]["code"] == "invalid", refused
    assert any("pairs.toml" in p and "invalid TOML" in p for p in refused["reload"]["problems"]), refused
    code, out, err = ctl(procs, engine, "reload")
    assert code == 1 and "pairs.toml" in err and "invalid TOML" in err, err
    assert api.get("/strategies/momentum")["version"] == "1.2.0"
    assert _trades(procs, engine, api, 2)

    (strategies / "pairs.toml").write_text((strategies / "pairs.toml").read_text().replace("\n[limits\n", "\n"))
    _replace(config / "engine.toml", "max_open_orders = 4096", "max_open_orders = 2048")  # restart-only
    status, refused = api.post("/reload")
    assert status == 409 and "engine.toml: max_open_orders is restart-only" in refused["error"]["message"], refused
    assert [c["command"] for c in refused["reload"]["changes"] if c["command"]] == ["deploy momentum"]
    code, out, err = ctl(procs, engine, "reload")
    assert code == 1 and "max_open_orders is restart-only" in err, err

    _replace(config / "engine.toml", "max_open_orders = 2048", "max_open_orders = 4096")
    (strategies / "momentum.toml").unlink()  # momentum is ACTIVE: the table does not let it retire
    status, refused = api.post("/reload")
    assert status == 409 and "strategies/momentum.toml: retire momentum: cannot retire" in refused["error"]["message"]

    status, bad = api.post("/reload", key="not a key")
    assert (status, bad["error"]["field"]) == (400, "Idempotency-Key"), bad
    assert applied(config) == []
    after = api.get("/strategies")
    assert {n: (s["state"], s["version"], s["deploy"]) for n, s in after.items()} == {
        n: (s["state"], s["version"], s["deploy"]) for n, s in before.items()}
    assert _trades(procs, engine, api, 3)
    assert engine.report()["strategies"]["momentum"]["state"] == "ACTIVE"


@pytest.mark.parametrize("driver", ["event", "spin"])
def test_reload_when_sighup_then_the_same_as_ctl_reload_journaled_as_sighup(procs, tmp_path, driver):
    config = api_config(tmp_path)
    engine = start(procs, config, "--driver", driver)
    api = Api(engine)
    assert api.call("GET", "/reload", token=READ_SECRET)[0] == 404
    _replace(config / "strategies" / "momentum.toml", 'version = "1.2.0"', 'version = "1.3.0"')

    engine.popen.send_signal(signal.SIGHUP)
    engine.wait_for(lambda: api.call("GET", "/reload", token=READ_SECRET)[0] == 200, "the SIGHUP reload")
    last = api.get("/reload")
    assert last["ok"] and last["actor"] == "SIGHUP", last
    assert [(c["command"], c["detail"]["to"]["version"]) for c in last["commands"]] == [("deploy", "1.3.0")]
    assert api.get("/strategies/momentum")["version"] == "1.3.0"
    assert [(type(c).__name__, c.actor) for c in applied(config)] == [("Deploy", "SIGHUP")]
    assert "reload by SIGHUP" in engine.stderr

    (config / "strategies" / "pairs.toml").write_text("name = [")  # broken: refused, logged, still running
    engine.popen.send_signal(signal.SIGHUP)
    engine.wait_for(lambda: not api.get("/reload")["ok"], "the refused SIGHUP reload")
    assert "reload refused" in engine.stderr and engine.alive()
    assert _trades(procs, engine, api, 1)
    (config / "strategies" / "pairs.toml").unlink()  # pairs is READY: it may retire (through the API's own path)
    status, result = api.post("/reload")
    assert status == 200 and [(c["command"], c["detail"]["to"]) for c in result["commands"]] == [
        ("transition", "RETIRED")], result
    report = engine.report()
    assert report["strategies"]["momentum"]["version"] == "1.3.0"
    assert OPS_SECRET not in json.dumps(report)
