"""engine/api/: the REST API's handlers over a real engine in this process (built by engine/service.py on a demo
config, its event driver and the app on one loop, real HTTP over loopback), and its parts: the error answers,
the bodies made from the commands, the tokens, the OpenAPI document. The real process is tests/e2e/test_api.py's.
"""
import asyncio
import contextlib
import socket
import threading
from concurrent.futures import Future

import aiohttp
import msgspec
import pytest

from engine import service as service_module
from engine.api import routes
from engine.api.auth import ANONYMOUS, Caller, Tokens
from engine.api.bodies import KillSwitchBody, StrategyLimits, TransitionBody, body_of, set_values
from engine.api.problems import decode_problem, refusal
from engine.commands import Deploy, SetLimits, Transition
from engine.config import load_config
from engine.config.schema import ApiToken
from engine.control import STRATEGY_KEYS
from engine.driver import run_event
from tests.e2e.e2e_kit import derive_config

OPERATOR_SECRET = "operator-secret-0123456789"
READ_SECRET = "read-only-secret-0123456789"
TOKENS = [{"name": "ops", "role": "operator", "token": OPERATOR_SECRET},
          {"name": "dash", "role": "read", "token": READ_SECRET}]


@pytest.fixture
def built(tmp_path):
    """A demo engine with the API on loopback port 0, two tokens, momentum ACTIVE and pairs READY; closed at the
    end."""
    config = load_config(derive_config(tmp_path / "config", engine={"api": {"tokens": TOKENS}},
                                       keep={"momentum", "pairs"}, strategies={"pairs": {"enabled": False}}))
    svc = service_module.build(config)
    try:
        yield svc
    finally:
        svc.close()


@contextlib.asynccontextmanager
async def serving(svc):
    """The event driver and the API on this loop, as `orchestrator run` has them; a client session of it."""
    stop = asyncio.Event()
    driver = asyncio.get_running_loop().create_task(run_event(svc.engine, stop))
    await svc.api.start(svc)
    try:
        async with aiohttp.ClientSession(svc.api.url) as session:
            yield session
    finally:
        await svc.api.stop()
        stop.set()
        await driver


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


OPS, DASH = bearer(OPERATOR_SECRET), bearer(READ_SECRET)


async def answer(response):
    return response.status, await response.json()


def run(coroutine):
    return asyncio.run(coroutine)


# ------------------------------------------------------------------------------------------------- openapi
def test_openapi_when_served_then_every_route_of_the_app_is_in_it_and_every_operation_in_it_is_a_route(built):
    async def scenario():
        async with serving(built) as http:
            async with http.get("/openapi.json", headers=DASH) as r:
                return await answer(r)
    status, doc = run(scenario())
    app_routes = {(r.method, r.resource.canonical) for r in built.api.app.router.routes()}
    documented = {(method.upper(), path) for path, operations in doc["paths"].items() for method in operations}

    assert status == 200 and doc["openapi"].startswith("3.1")
    assert app_routes == documented
    assert {"StrategyLimits", "KillSwitchBody", "CommandResult", "ErrorResponse"} <= set(doc["components"]["schemas"])
    limits = doc["components"]["schemas"]["StrategyLimits"]
    assert set(limits["properties"]) == set(STRATEGY_KEYS) and limits["additionalProperties"] is False
    assert doc["paths"]["/health"]["get"]["security"] == []
    reload = doc["paths"]["/reload"]["post"]
    assert reload["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReloadResult")
    assert {"409", "422"} <= set(reload["responses"]) and "501" not in reload["responses"]
    assert "Idempotency-Key" in [p["name"] for p in reload["parameters"]] and "Change" in doc["components"]["schemas"]


# ------------------------------------------------------------------------------------------------- bodies
def test_body_when_made_from_a_command_then_it_lacks_id_actor_and_what_the_path_gives():
    assert TransitionBody.__struct_fields__ == ()
    assert body_of(Deploy, from_path=("strategy",)).__struct_fields__ == ("file",)
    assert KillSwitchBody.__struct_fields__ == ("scope", "name", "on")
    with pytest.raises(msgspec.ValidationError, match="unknown field `actor`"):
        msgspec.json.decode(b'{"scope": "global", "on": true, "actor": "someone else"}', type=KillSwitchBody)


def test_limits_body_when_decoded_then_each_key_has_the_schema_type_and_a_missing_key_is_not_set():
    body = msgspec.json.decode(b'{"max_order_qty": 5, "action": "reduce"}', type=StrategyLimits)
    assert set_values(body) == {"max_order_qty": 5, "action": "reduce"}
    for raw, path in ((b'{"max_order_qty": 0}', "$.max_order_qty"), (b'{"action": "explode"}', "$.action")):
        with pytest.raises(msgspec.ValidationError, match=path.replace("$", r"\$")):
            msgspec.json.decode(raw, type=StrategyLimits)


# ------------------------------------------------------------------------------------------------- problems
@pytest.mark.parametrize("raw, status, code, field", [
    (b'{"max_order_qty": 5', 400, "bad_json", None),
    (b'[1, 2]', 400, "bad_field", "$"),
    (b'{"max_order_qty": "five"}', 400, "bad_field", "$.max_order_qty"),
    (b'{"max_order_qty": null}', 400, "bad_field", "$.max_order_qty"),
    (b'{"max_order_qyt": 5}', 400, "bad_field", "$.max_order_qyt"),
    (b'{"max_order_qty": -5}', 422, "invalid", "$.max_order_qty"),
    (b'{"action": "explode"}', 422, "invalid", "$.action"),
])
def test_decode_problem_when_a_body_is_refused_then_status_code_and_field_say_why(raw, status, code, field):
    with pytest.raises(msgspec.MsgspecError) as caught:
        msgspec.json.decode(raw, type=StrategyLimits)
    problem = decode_problem(caught.value)
    assert (problem.status, problem.problem.code, problem.problem.field) == (status, code, field)


@pytest.mark.parametrize("command, status", [
    (Transition(strategy="nobody", action="pause"), 404),
    (Transition(strategy="pairs", action="pause"), 409),          # READY: the table's reason
    (Transition(strategy="pairs", action="resume"), 409),         # resume is for PAUSED
    (SetLimits(account="nobody", values={"max_net_notional": 1.0}), 404),
    (SetLimits(strategy="momentum", values={"max_order_qty": 0}), 422),
    (SetLimits(strategy="momentum", values={"colour": 1}), 422),
])
def test_refusal_when_the_engine_refuses_a_command_then_its_words_give_the_status(built, command, status):
    result = built.engine.control.apply(command, built.engine.clock())
    assert not result.ok
    assert refusal(result).status == status, result.error


def test_refusal_when_a_schema_check_names_a_path_then_the_error_carries_it(built):
    result = built.engine.control.apply(SetLimits(strategy="momentum", values={"max_order_qty": 0}), 0)
    assert refusal(result).problem.field == "$.limits.max_order_qty"


# ------------------------------------------------------------------------------------------------- tokens
def token(name, role, **secret):
    return msgspec.convert({"name": name, "role": role, **secret}, ApiToken)


def test_tokens_when_presented_then_only_a_known_bearer_token_names_a_caller():
    tokens = Tokens([token("ops", "operator", token=OPERATOR_SECRET), token("dash", "read", token=READ_SECRET)])
    assert tokens.caller(f"Bearer {OPERATOR_SECRET}") == Caller("ops", "operator")
    assert tokens.caller(f"bearer {READ_SECRET}") == Caller("dash", "read")
    for header in (None, "", "Bearer", f"Basic {OPERATOR_SECRET}", f"Bearer {OPERATOR_SECRET}x",
                   f"Bearer {OPERATOR_SECRET[:-1]}"):
        assert tokens.caller(header) is None, header


def test_tokens_when_none_are_configured_then_every_caller_is_an_anonymous_operator():
    assert Tokens([]).caller(None) == ANONYMOUS and ANONYMOUS.actor == "anonymous (operator)"


def test_tokens_when_read_from_the_environment_then_a_missing_or_short_variable_is_named_and_nothing_shown():
    entry = token("ops", "operator", token_env="OPS_TOKEN")
    assert Tokens([entry], environ={"OPS_TOKEN": OPERATOR_SECRET}).caller(f"Bearer {OPERATOR_SECRET}").name == "ops"
    with pytest.raises(ValueError, match="OPS_TOKEN, which is not set"):
        Tokens([entry], environ={})
    with pytest.raises(ValueError, match="not shown") as caught:
        Tokens([entry], environ={"OPS_TOKEN": "tiny-secret"})
    assert "tiny-secret" not in str(caught.value)


def test_caller_when_asked_for_a_role_then_operator_may_read_and_read_may_not_operate():
    assert Caller("a", "operator").may("read") and Caller("a", "operator").may("operator")
    assert Caller("a", "read").may("read") and not Caller("a", "read").may("operator")


# ------------------------------------------------------------------------------------------------- handlers
def test_command_when_sent_by_an_operator_then_applied_between_batches_journaled_with_its_actor(built):
    async def scenario():
        async with serving(built) as http:
            async with http.post("/strategies/momentum/pause", headers={**OPS, "Idempotency-Key": "op-1"}) as r:
                first = await answer(r)
            async with http.post("/strategies/momentum/pause", headers={**OPS, "Idempotency-Key": "op-1"}) as r:
                again = await answer(r)
            async with http.get("/commands/op-1", headers=DASH) as r:
                looked_up = await answer(r)
            async with http.get("/strategies/momentum", headers=DASH) as r:
                return first, again, looked_up, await answer(r)
    (s1, first), (s2, again), (s3, looked_up), (s4, strategy) = run(scenario())

    assert (s1, first["ok"], first["id"], first["detail"]["to"]) == (200, True, "op-1", "PAUSED")
    assert (s2, again["repeated"], again["seq"]) == (200, True, first["seq"])
    assert (s3, looked_up["seq"]) == (200, first["seq"])
    assert (s4, strategy["state"]) == (200, "PAUSED")


def test_command_when_idempotency_key_is_not_an_id_then_400_names_the_header(built):
    async def scenario():
        async with serving(built) as http:
            async with http.post("/strategies/momentum/pause", headers={**OPS, "Idempotency-Key": "no spaces!"}) as r:
                return await answer(r)
    status, body = run(scenario())
    assert status == 400 and body["error"]["field"] == "Idempotency-Key"
    assert built.engine.state.state_of("momentum") == "ACTIVE"


@pytest.mark.parametrize("headers, data, status", [
    ({"Content-Length": str(routes.MAX_BODY_BYTES + 1)}, b"x" * (routes.MAX_BODY_BYTES + 1), 413),
    ({}, b'{"max_order_qty": 1' + b" " * (2 * routes.MAX_BODY_BYTES) + b"}", 413),  # chunked: read to the limit
])
def test_body_when_over_the_size_limit_then_413_and_nothing_changes(built, headers, data, status):
    async def chunks():
        for start in range(0, len(data), 4096):
            yield data[start:start + 4096]

    async def scenario():
        async with serving(built) as http:
            body = data if headers else chunks()
            async with http.post("/strategies/momentum/limits", headers={**OPS, **headers}, data=body) as r:
                return await answer(r)
    got, body = run(scenario())
    assert got == status and body["error"]["code"] == "too_large"
    assert built.engine.state.strategies[built.engine.state.strategy_id("momentum")]["max_order_qty"] != 1


def test_body_when_the_client_stalls_inside_it_then_408_and_the_engine_goes_on(built, monkeypatch):
    monkeypatch.setattr(routes, "BODY_TIMEOUT_S", 0.3)

    async def scenario():
        async with serving(built):
            host, port = built.api.sock.getsockname()[:2]
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST /strategies/momentum/pause HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         f"{OPERATOR_SECRET}\r\nContent-Length: 100\r\n\r\n{{".encode())
            await writer.drain()
            batches = built.engine.stats.batches
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            await writer.wait_closed()
            return head, built.engine.stats.batches - batches
    head, batches_meanwhile = run(scenario())
    assert head.startswith(b"HTTP/1.1 408")
    assert batches_meanwhile > 0  # the heartbeat went on while the request waited
    assert built.engine.state.state_of("momentum") == "ACTIVE"


def test_read_when_the_engine_thread_is_another_then_it_runs_between_steps_and_a_failure_reaches_the_asker(built):
    engine = built.engine
    seen = engine.read(lambda: engine.stats.batches)
    failed = engine.read(lambda: engine.state.strategy_id("nobody"))
    gave_up = engine.read(lambda: pytest.fail("a read whose asker gave up runs"))
    gave_up.cancel()
    assert not seen.done()  # nothing runs until the driver serves them

    engine.serve_reads()

    assert seen.result() == engine.stats.batches
    assert isinstance(failed.exception(), KeyError)
    assert gave_up.cancelled() and not engine.reads


def test_read_routes_when_served_beside_the_spin_driver_then_the_driver_answers_them(built):
    """The API on its own thread; this thread plays the spin driver, serving reads between its steps."""
    built.api.start_thread(built)
    try:
        future = Future()

        def client():
            async def get():
                async with aiohttp.ClientSession(built.api.url) as http:
                    async with http.get("/strategies", headers=DASH) as r:
                        return await answer(r)
            try:
                future.set_result(asyncio.run(get()))
            except Exception as e:
                future.set_exception(e)

        thread = threading.Thread(target=client)
        thread.start()
        while not future.done():
            built.engine.step()
            built.engine.serve_reads()
        thread.join()
        status, strategies = future.result()
    finally:
        built.api.stop_thread()
    assert status == 200 and set(strategies) == {"momentum", "pairs"}
    assert built.api.stats.as_dict()["reads"] == 1


# ------------------------------------------------------------------------------------------------- start
def test_build_when_a_token_variable_is_unset_then_the_engine_does_not_start_and_says_which(tmp_path):
    config = load_config(derive_config(tmp_path / "config", engine={"api": {"tokens": [
        {"name": "ops", "role": "operator", "token_env": "ORCHESTRATOR_TEST_UNSET_TOKEN"}]}}))
    with pytest.raises(ValueError, match="ORCHESTRATOR_TEST_UNSET_TOKEN"):
        service_module.build(config)


def test_build_when_the_api_port_is_taken_then_the_engine_does_not_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = load_config(derive_config(tmp_path / "config", engine={"api": {"port": taken.getsockname()[1]}}))
        with pytest.raises(OSError):
            service_module.build(config)


# ------------------------------------------------------------------------------------------------- why
def test_strategy_detail_when_the_engine_or_an_operator_moved_it_then_it_says_which_command(built):
    from engine import report
    from engine.commands import HaltAll
    engine, state = built.engine, built.engine.state
    engine.control.apply(HaltAll(actor="engine", policy="halt", reason="OMS link lost"), engine.clock())
    momentum, pairs = state.strategy_id("momentum"), state.strategy_id("pairs")

    moved = report.strategy_detail(state, momentum, engine.control.results)["moved_by"]
    assert (moved["command"], moved["policy"], moved["reason"]) == ("halt_all", "halt", "OMS link lost")
    assert report.strategy_detail(state, pairs, engine.control.results)["moved_by"] is None  # READY: not moved

    engine.control.apply(Transition(id="op-9", strategy="momentum", action="reset"), engine.clock())
    summary = report.strategy_summaries(state, engine.control.results)["momentum"]
    assert {k: summary["moved_by"][k] for k in ("command", "id", "from", "to")} == {
        "command": "transition", "id": "op-9", "from": "HALTED", "to": "READY"}
