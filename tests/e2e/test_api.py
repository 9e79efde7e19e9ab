"""The REST API and `orchestrator ctl` against the real `orchestrator run` over loopback: what they answer, and
what it did, seen in the status file and the journal. Auth on every route, bad input of every kind, racing
commands, a stalled client and a read load while the feed trades, the spin driver, an OMS outage undone by
`ctl activate`, the client's exit codes.
"""
import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from adapters.journal import JournalReader
from engine.journal import Applied, decode
from tests.e2e.api_load import paced
from tests.e2e.e2e_kit import derive_config, market_data_frame, signal_frame
from tests.e2e.test_bad_input import ROOMY

OPS_SECRET = "ops-secret-token-0123456789"     # the operator's, given to the engine in its environment
READ_SECRET = "read-secret-token-0123456789"   # the dashboard's, written in engine.toml
OPS_ENV = {"ORCHESTRATOR_TEST_OPS_TOKEN": OPS_SECRET}
TOKENS = [{"name": "ops", "role": "operator", "token_env": "ORCHESTRATOR_TEST_OPS_TOKEN"},
          {"name": "dash", "role": "read", "token": READ_SECRET}]


def api_config(tmp_path, tokens=True, demo=False, **engine):
    """momentum (ACTIVE, room for every signal) and pairs (READY), or with `demo` the demo's strategies as they
    are (they trade the feed); the API with two tokens (or none)."""
    return derive_config(tmp_path / "config", keep=None if demo else {"momentum", "pairs"},
                         strategies=None if demo else {"momentum": ROOMY, "pairs": {"enabled": False}},
                         engine={"api": {"tokens": TOKENS if tokens else []}, **engine})


def start(procs, config, *extra, tokens=True):
    return procs.engine(config, *extra, env=OPS_ENV if tokens else None)


class Api:
    """HTTP to one engine's API: `call` answers (status, JSON or None)."""

    def __init__(self, engine):
        self.url = engine.ready["api"]
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    def call(self, method, path, body=None, token=None, key=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            sent = {**(headers or {})}
            if token:
                sent["Authorization"] = f"Bearer {token}"
            if key:
                sent["Idempotency-Key"] = key
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def get(self, path, token=READ_SECRET):
        status, body = self.call("GET", path, token=token)
        assert status == 200, (path, status, body)
        return body

    def post(self, path, body=None, token=OPS_SECRET, key=None):
        return self.call("POST", path, body, token=token, key=key)


def applied(config):
    """The commands in the engine's journal so far, in order."""
    reader = JournalReader(config / "var" / "journal")
    return [record.command for _, body in reader.records() if isinstance(record := decode(body), Applied)]


def ctl(procs, engine, *args, token=OPS_SECRET):
    """`orchestrator ctl --url ENGINE ...`: (exit code, stdout, stderr)."""
    return procs.run("ctl", *args, "--url", engine.ready["api"], *(("--token", token) if token else ()), name="ctl")


def every_route(api):
    """(method, path) of every operation in the engine's own OpenAPI document, names filled in."""
    doc = api.get("/openapi.json")
    return [(method.upper(), path.replace("{name}", "momentum").replace("{id}", "nothing"))
            for path, operations in doc["paths"].items() for method in operations]


# ------------------------------------------------------------------------------------------------- basics
def test_run_when_ready_then_the_line_and_the_ready_file_give_the_api_url_and_health_needs_no_token(procs, tmp_path):
    engine = start(procs, api_config(tmp_path))
    api = Api(engine)

    assert engine.ready["api"].startswith("http://127.0.0.1:")
    assert f"api {engine.ready['api']}" in engine.stderr
    status, health = api.call("GET", "/health")
    assert status == 200 and (health["status"], health["engine"], health["oms_up"]) == ("ok", "demo", True)


def test_ctl_when_an_operator_pauses_and_activates_then_the_engine_and_its_journal_say_who_did(procs, tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)

    code, out, err = ctl(procs, engine, "pause", "momentum")
    assert code == 0, err
    assert "momentum: ACTIVE -> PAUSED" in out
    engine.wait_status(lambda r: r["strategies"]["momentum"]["state"] == "PAUSED", "momentum PAUSED")
    code, out, err = ctl(procs, engine, "show", "momentum", "--json", token=READ_SECRET)
    assert code == 0 and json.loads(out)["state"] == "PAUSED"
    code, out, err = ctl(procs, engine, "activate", "momentum", "--id", "reactivate-1")
    assert code == 0, err
    code, out, err = ctl(procs, engine, "status")
    assert code == 0 and "momentum" in out and "ACTIVE" in out

    commands = applied(config)
    assert [(c.strategy, c.action, c.actor) for c in commands] == [("momentum", "pause", "ops (operator)"),
                                                                   ("momentum", "activate", "ops (operator)")]
    assert commands[1].id == "reactivate-1"
    report = engine.report()
    assert report["strategies"]["momentum"]["state"] == "ACTIVE"
    assert OPS_SECRET not in engine.stderr + engine.stdout and READ_SECRET not in engine.stderr + engine.stdout


# ------------------------------------------------------------------------------------------------- auth
def test_api_when_a_token_is_missing_wrong_or_only_reads_then_401_401_403_and_nothing_is_journaled(procs, tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    routes = every_route(api)
    posts = [(m, p) for m, p in routes if m == "POST"]
    assert len(routes) >= 25 and len(posts) >= 15

    for method, path in routes:
        expected = 200 if path == "/health" else 401
        assert api.call(method, path, {})[0] == expected, (method, path)
        if path != "/health":
            status, body = api.call(method, path, {}, token=OPS_SECRET + "x")
            assert (status, body["error"]["code"]) == (401, "unauthorized"), (method, path)
    for method, path in posts:
        status, body = api.call(method, path, {}, token=READ_SECRET)
        assert (status, body["error"]["code"]) == (403, "forbidden"), (method, path, body)
        assert "dash (read)" in body["error"]["message"]
    assert applied(config) == []
    before = api.get("/strategies")

    for method, path in routes:  # the operator may read everything
        if method == "GET":
            status, _ = api.call(method, path, token=OPS_SECRET)
            assert status == (404 if path in ("/commands/nothing", "/reload") else 200), path  # none yet
    assert api.post("/strategies/pairs/activate")[0] == 200
    assert [(c.action, c.actor) for c in applied(config)] == [("activate", "ops (operator)")]
    assert before["pairs"]["state"] == "READY" and api.get("/strategies")["pairs"]["state"] == "ACTIVE"
    assert OPS_SECRET not in engine.stderr and READ_SECRET not in engine.stderr


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("method, path, body, headers, status, code, field", [
    ("POST", "/strategies/momentum/limits", b'{"max_order_qty": 5', {}, 400, "bad_json", None),
    ("POST", "/strategies/momentum/limits", b'{"max_order_qty": 5, "colour": "red"}', {}, 400, "bad_field",
     "$.colour"),
    ("POST", "/strategies/momentum/limits", b'{"max_order_qty": "5"}', {}, 400, "bad_field", "$.max_order_qty"),
    ("POST", "/kill-switch", b'{"scope": "global"}', {}, 400, "bad_field", "$.on"),
    ("POST", "/kill-switch", b'{"scope": "global", "on": true, "actor": "someone else"}', {}, 400, "bad_field",
     "$.actor"),
    ("POST", "/strategies/momentum/limits", b'{"max_order_qty": 0}', {}, 422, "invalid", "$.max_order_qty"),
    ("POST", "/strategies/momentum/limits", b'{"action": "explode"}', {}, 422, "invalid", "$.action"),
    ("POST", "/strategies/momentum/limits", b"{}", {}, 422, "invalid", None),
    ("POST", "/strategies/momentum/limits", b'{"max_order_qty": 1}' + b" " * 70_000, {}, 413, "too_large", None),
    ("POST", "/strategies/nobody/pause", None, {}, 404, "not_found", None),
    ("POST", "/accounts/nobody/limits", b'{"max_net_notional": 5.0}', {}, 404, "not_found", None),
    ("GET", "/strategies/nobody", None, {}, 404, "not_found", None),
    ("GET", "/no/such/route", None, {}, 404, "not_found", None),
    ("DELETE", "/strategies/momentum", None, {}, 405, "method_not_allowed", None),
    ("POST", "/strategies/pairs/pause", None, {}, 409, "conflict", None),
    ("POST", "/strategies/momentum/resume", None, {}, 409, "conflict", None),
    ("POST", "/strategies/momentum/pause", None, {"Idempotency-Key": "not a key"}, 400, "bad_field",
     "Idempotency-Key"),
    ("POST", "/kill-switch", b'{"scope": "global", "name": "x", "on": true}', {}, 422, "invalid", None),
])
def test_api_when_input_is_bad_then_its_status_code_and_field_say_why_and_nothing_changes(
        procs, tmp_path, method, path, body, headers, status, code, field):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    before = api.get("/strategies")

    got, answer = api.call(method, path, body, token=OPS_SECRET, headers=headers)

    assert (got, answer["error"]["code"], answer["error"]["field"]) == (status, code, field), answer
    if status == 409:
        assert "cannot" in answer["error"]["message"] and "allowed there" in answer["error"]["message"] or \
            "resume is for PAUSED" in answer["error"]["message"]
        assert answer["result"]["ok"] is False and answer["result"]["seq"] == 0
    assert {n: s["state"] for n, s in api.get("/strategies").items()} == {n: s["state"] for n, s in before.items()}
    assert applied(config) == []


def test_api_when_versions_are_deployed_rolled_back_shadowed_and_registered_then_the_history_says_who(procs,
                                                                                                   tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    strategies = config / "strategies"
    file = strategies / "momentum.toml"
    file.write_text(file.read_text().replace('version = "1.2.0"', 'version = "1.3.0"'))

    status, deployed = api.post("/strategies/momentum/deploy", {})
    assert status == 200 and deployed["ok"], deployed
    detail = api.get("/strategies/momentum")
    assert (detail["version"], detail["deploy"]) == ("1.3.0", 2)
    assert [(d["number"], d["version"], d["actor"]) for d in detail["deploys"]][-1] == (2, "1.3.0", "ops (operator)")
    status, refused = api.post("/strategies/momentum/deploy", {})  # the running version again
    assert status == 422 and "nothing to deploy" in refused["error"]["message"], refused
    code, out, err = ctl(procs, engine, "rollback", "momentum")
    assert code == 0, err
    assert (api.get("/strategies/momentum")["version"], api.get("/strategies/momentum")["deploy"]) == ("1.2.0", 3)
    status, refused = api.post("/strategies/momentum/rollback", {"to": 99})
    assert status == 422 and refused["error"]["message"] == refused["result"]["error"]

    (strategies / "momentum-next.toml").write_text(file.read_text().replace('version = "1.3.0"', 'version = "1.4.0"'))
    code, out, err = ctl(procs, engine, "shadow", "momentum", "on", "--file", "momentum-next.toml")
    assert code == 0, err
    assert api.get("/strategies/momentum")["shadows"][0]["version"] == "1.4.0"
    assert ctl(procs, engine, "shadow", "momentum", "off")[0] == 0

    pairs = (strategies / "pairs.toml").read_text()
    (strategies / "pairs2.toml").write_text(pairs.replace('name = "pairs"', 'name = "pairs2"'))
    code, out, err = ctl(procs, engine, "register", "pairs2.toml")
    assert code == 0, err
    assert api.get("/strategies")["pairs2"]["state"] == "READY"
    status, missing = api.post("/strategies", {"file": "nothing-here.toml"})
    assert (status, missing["error"]["code"]) == (404, "not_found"), missing
    assert [type(c).__name__ for c in applied(config)] == ["Deploy", "Rollback", "Shadow", "Shadow", "Register"]
    assert {c.actor for c in applied(config)} == {"ops (operator)"}
    status, answer = api.post("/reload")  # momentum-next.toml holds a second "momentum": the config does not load
    assert status == 422 and any("already defined" in p for p in answer["reload"]["problems"]), answer


# ------------------------------------------------------------------------------------------------- races
@pytest.mark.parametrize("same_key", [False, True])
def test_api_when_two_pauses_race_then_one_is_applied_and_the_other_refused_or_repeated(procs, tmp_path, same_key):
    config = api_config(tmp_path)
    engine = start(procs, config)
    api = Api(engine)
    barrier, answers = threading.Barrier(2), []

    def pause(k):
        barrier.wait()
        answers.append(api.post("/strategies/momentum/pause", key="race" if same_key else f"race-{k}"))
    threads = [threading.Thread(target=pause, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = sorted(status for status, _ in answers)
    if same_key:
        assert statuses == [200, 200]
        assert sorted(answer["repeated"] for _, answer in answers) == [False, True]
        assert answers[0][1]["seq"] == answers[1][1]["seq"]
    else:
        assert statuses == [200, 409]
    assert [c.action for c in applied(config)] == ["pause"]
    assert api.get("/strategies/momentum")["state"] == "PAUSED"


# ------------------------------------------------------------------------------------------------- load
def test_api_when_clients_stall_mid_request_then_the_engine_trades_and_answers_others(procs, tmp_path):
    engine = start(procs, api_config(tmp_path))
    api = Api(engine)
    stalled = []
    for head in (b"POST /strategies/momentum/pause HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                 OPS_SECRET.encode() + b"\r\nContent-Length: 100\r\n\r\n{",   # the body never comes
                 b"GET /strategies HTTP/1.1\r\nHost: x\r\nAuthor",             # nor the rest of the headers
                 b"GE"):                                                        # nor the request line
        sock = socket.create_connection((api.host, api.port))
        sock.sendall(head)
        stalled.append(sock)
    try:
        summary = procs.feed(engine, "udp", "--rate", 2000, "--count", 1000, "--duration", 0, "--bad-ratio", 0,
                             "--bad-every", 0)
        report = engine.wait_status(lambda r: r["counters"]["signals"] == summary["signals"], "every signal decided")
        assert report["counters"]["orders"] + report["counters"]["rejects"] > 0  # decided, not just read
        assert api.get("/health", token=None)["status"] == "ok"
        assert api.get("/strategies/momentum")["state"] == "ACTIVE"  # the stalled pause never happened
    finally:
        for sock in stalled:
            sock.close()


def test_api_when_read_1000_times_a_second_while_the_feed_trades_then_the_engine_keeps_up(procs, tmp_path,
                                                                                         record_property):
    engine = start(procs, api_config(tmp_path, demo=True))
    api = Api(engine)
    feed = procs.start_feed(engine, "udp", "--rate", 2000, "--duration", 4, "--bad-ratio", 0, "--bad-every", 0,
                            "--json")

    load = paced(api.url, "/strategies", rate=1000, count=3000, headers={"Authorization": f"Bearer {READ_SECRET}"})

    assert feed.wait(60) == 0
    sent = json.loads(feed.stdout)["signals"]
    report = engine.wait_status(lambda r: r["counters"]["signals"] == sent, "every signal decided")
    assert load["statuses"] == {200: 3000} and report["counters"]["orders"] > 0
    figures = {"reads": load, "signal_to_order_us": report["signal_to_order_us"], "api": report["api"],
               "udp_kernel_drops": report["transports"]["udp"].get("kernel_drops")}
    record_property("api_load", json.dumps(figures))
    print(json.dumps(figures, indent=1))  # figures, not assertions: the machine is shared
    assert report["api"]["reads"] >= 3000


# ------------------------------------------------------------------------------------------------- spin, OMS
def test_api_when_beside_the_spin_driver_then_reads_and_commands_are_served_between_steps(procs, tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config, "--driver", "spin")
    api = Api(engine)
    udp = procs.udp(engine)
    udp.send(market_data_frame(), signal_frame(1, price=6000.25))

    assert api.post("/strategies/momentum/pause")[0] == 200
    assert api.get("/strategies/momentum")["state"] == "PAUSED"
    code, out, err = ctl(procs, engine, "status", token=READ_SECRET)
    assert code == 0, err
    assert api.get("/counters")["api"]["reads"] >= 2
    assert [c.action for c in applied(config)] == ["pause"]
    assert engine.report()["strategies"]["momentum"]["state"] == "PAUSED"


@pytest.mark.parametrize("policy, operator_steps", [("halt", ("reset", "activate")), ("reduce", ("activate",))])
def test_ctl_when_the_oms_link_came_back_then_the_operator_rearms_the_strategies_it_stopped(procs, tmp_path, policy,
                                                                                           operator_steps):
    """The README's "Operating it": the link drops, the policy halts (or reduces) momentum, the link comes back
    and the strategy stays so until an operator acts: HALTED needs a reset (to READY), then an activate."""
    oms = procs.sim_oms("--drop-after", "2")
    engine = start(procs, api_config(tmp_path, tokens=False, oms={
        "kind": "tcp", "tcp": {"host": "127.0.0.1", "port": oms.port}, "on_disconnect": policy,
        "reconnect_backoff_min_ms": 50, "reconnect_backoff_max_ms": 200}), tokens=False)
    stopped = {"halt": "HALTED", "reduce": "REDUCING"}[policy]
    udp = procs.udp(engine)
    udp.send(market_data_frame(), signal_frame(1, price=6000.25), signal_frame(2, price=6000.25))
    engine.wait_status(lambda r: r["strategies"]["momentum"]["state"] == stopped and r["oms"]["up"],
                       f"momentum {stopped} by the OMS policy, and the link back up")
    code, out, err = ctl(procs, engine, "strategies", token=None)
    assert code == 0 and stopped in out and f"{policy}: OMS link lost" in out  # why: the engine's own policy
    orders = engine.wait_status(lambda r: True, "a status")["counters"]["orders"]

    for step in operator_steps:
        code, out, err = ctl(procs, engine, step, "momentum", token=None)
        assert code == 0, err
    assert f"momentum: {'READY' if policy == 'halt' else stopped} -> ACTIVE" in out
    udp.send(signal_frame(3, price=6000.25))
    report = engine.wait_status(lambda r: r["counters"]["orders"] > orders, "an order after the activation")
    assert report["strategies"]["momentum"]["state"] == "ACTIVE"


# ------------------------------------------------------------------------------------------------- ctl
def test_ctl_when_things_go_wrong_then_its_exit_code_says_what(procs, tmp_path):
    config = api_config(tmp_path)
    engine = start(procs, config)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"

    assert ctl(procs, engine, "strategies")[0] == 0
    assert ctl(procs, engine, "pause", "pairs")[0] == 1                       # READY: refused by the engine
    assert ctl(procs, engine, "limits", "momentum", "max_order_qty=0")[0] == 1
    engine_file = config / "engine.toml"
    engine_file.write_text(engine_file.read_text().replace("max_open_orders = 4096", "max_open_orders = 2048"))
    assert ctl(procs, engine, "reload")[0] == 1                                # a restart-only key changed
    assert ctl(procs, engine, "strategies", token=None)[0] == 4
    assert ctl(procs, engine, "strategies", token="wrong-token-0123456789")[0] == 4
    assert ctl(procs, engine, "pause", "momentum", token=READ_SECRET)[0] == 4
    assert procs.run("ctl", "status", "--url", nowhere, name="ctl")[0] == 3
    assert ctl(procs, engine, "limits", "momentum", "nonsense")[0] == 2
    assert ctl(procs, engine, "frobnicate")[0] == 2
    code, out, err = ctl(procs, engine, "pause", "pairs", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "conflict" and "cannot pause" in err
