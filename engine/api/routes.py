"""The routes of the REST management API and their handlers, over one engine service (docs/api.md).

Reads never race a batch. On the event driver the app runs on the engine's own loop, so a handler runs
between two batches and reads the arena directly. Beside the spin driver the app has a thread and loop of its
own, and a read is a closure the driver runs between two steps (engine/driver.py `Engine.read`). Either way
the time a read holds the engine's thread is measured (`ApiStats`): its budget is 100 us on the demo config
(5 strategies, 6 instruments), most reads taking 15-50 us.

Every change is a command (engine/commands.py): the handler builds it from the path, the body, the caller
(actor "<token name> (<role>)") and the Idempotency-Key header (its id: a retry gets the first result), and
`Control.submit`s it; the driver applies it between batches and the handler answers its CommandResult, or
the engine's refusal as an error with the status its words call for (problems.py).
"""
import asyncio
import functools
import logging
import time
from dataclasses import dataclass

import msgspec
from aiohttp import web
from hdrh.histogram import HdrHistogram

from engine import report
from engine.api.auth import Caller
from engine.api.bodies import (
    AccountLimits, DeployBody, KillSwitchBody, RegisterBody, RollbackBody, ShadowBody, StrategyLimits,
    TransitionBody, set_values,
)
from engine.api.openapi import document
from engine.api.problems import CODES, ApiError, decode_problem, refusal
from engine.commands import CommandId, Deploy, KillSwitch, Register, Rollback, SetLimits, Shadow, Transition
from engine.reload import ReloadRefused, ReloadResult
from kernels.dtypes import COUNTER_NAMES

log = logging.getLogger("orchestrator.api")

MAX_BODY_BYTES = 64 * 1024  # every command's body is far smaller: a larger one is refused (413) unread
BODY_TIMEOUT_S = 10.0       # a client that stalls inside its body is answered 408 after this long
ENGINE_TIMEOUT_S = 5.0      # a read or a command the engine has not served in this long: 503
# the route's action -> the Transition action (kernels/lifecycle.py's table decides when each is allowed)
TRANSITIONS = {"activate": "activate", "pause": "pause", "resume": "resume", "reduce": "reduce_only",
               "halt": "halt", "reset": "reset", "deactivate": "deactivate", "retire": "retire"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str                # its operationId
    summary: str
    handler: object          # async (request, caller, body) -> JSON-ready data or a Struct
    role: str | None         # the least role that may call it; None: anyone (health)
    body: type | None = None  # the Struct its body decodes into
    command: bool = False     # it sends a command: answers a CommandResult
    more_errors: tuple = ()   # statuses it may answer beyond those its role, path and body imply
    answers: type | None = None  # the Struct it answers with, when not a CommandResult


class ApiStats:
    """What the API did: answers by status, and the time each read held the engine's thread."""

    def __init__(self):
        self.answers = {}
        self.commands = 0
        self.read_ns = HdrHistogram(1, 60_000_000_000, 2)

    def as_dict(self):
        h = self.read_ns
        return {"answers": {str(k): v for k, v in sorted(self.answers.items())}, "commands": self.commands,
                "reads": h.get_total_count(),
                "read_us": {"p50": h.get_value_at_percentile(50) / 1000, "p99": h.get_value_at_percentile(99) / 1000,
                            "max": h.get_max_value() / 1000}}


class Api:
    """The routes over `service` (engine/service.py Service), with `tokens` (auth.Tokens) for who may call
    them, counting in `stats`. `on_engine_thread`: the app runs on the event driver's loop (reads are direct),
    not beside the spin driver (reads are queued to it)."""

    def __init__(self, service, tokens, stats, *, on_engine_thread):
        self.service = service
        self.engine = service.engine
        self.tokens = tokens
        self.on_engine_thread = on_engine_thread
        self.stats = stats
        self.routes = self._routes()
        self.openapi = document(self.routes, service.engine.state.config.engine.name)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._answer], client_max_size=MAX_BODY_BYTES)
        for route in self.routes:
            app.router.add_route(route.method, route.path, functools.partial(self._endpoint, route), name=route.name)
        return app

    # ------------------------------------------------------------------------------------------ the table
    def _routes(self):
        read, operator = "read", "operator"
        routes = [
            Route("GET", "/health", "health", "Whether the engine answers: its name, uptime and OMS link",
                  self._health, None),
            Route("GET", "/openapi.json", "openapi", "This API, as an OpenAPI 3.1 document", self._openapi, read),
            Route("GET", "/strategies", "strategies", "Every strategy: state, trip cause, deploy, counts, P&L",
                  self._strategies, read),
            Route("GET", "/strategies/{name}", "strategy", "One strategy: its state and why (trip cause, breaker "
                  "counts, kill switches), version and deploy history, positions and P&L per instrument, limits, "
                  "rejects by reason", self._strategy, read),
            Route("GET", "/accounts", "accounts", "Every account: limits, kill switches, exposure, P&L",
                  self._accounts, read),
            Route("GET", "/instruments", "instruments", "Every instrument: contract and last market",
                  self._instruments, read),
            Route("GET", "/counters", "counters", "The engine's counters, the driver's and the API's",
                  self._counters, read),
            Route("GET", "/transports", "transports", "The listening transports and the OMS link",
                  self._transports, read),
            Route("GET", "/journal", "journal", "The journal, the snapshots and what recovery did at start",
                  self._journal, read),
            Route("GET", "/commands/{id}", "command", "The result of an applied command, by id",
                  self._command_result, read),
            Route("POST", "/strategies", "register", Register.__doc__, self._register, operator, RegisterBody, True),
        ]
        for action in TRANSITIONS:
            routes.append(Route("POST", f"/strategies/{{name}}/{action}", action,
                                f"{action.capitalize()} a strategy. {Transition.__doc__}",
                                functools.partial(self._transition, action), operator, TransitionBody, True))
        routes += [
            Route("POST", "/strategies/{name}/limits", "strategy_limits", SetLimits.__doc__, self._strategy_limits,
                  operator, StrategyLimits, True),
            Route("POST", "/strategies/{name}/deploy", "deploy", Deploy.__doc__, self._deploy, operator,
                  DeployBody, True),
            Route("POST", "/strategies/{name}/rollback", "rollback", Rollback.__doc__, self._rollback, operator,
                  RollbackBody, True),
            Route("POST", "/strategies/{name}/shadow", "shadow", Shadow.__doc__, self._shadow, operator,
                  ShadowBody, True),
            Route("POST", "/accounts/{name}/limits", "account_limits", SetLimits.__doc__, self._account_limits,
                  operator, AccountLimits, True),
            Route("POST", "/kill-switch", "kill_switch", KillSwitch.__doc__, self._kill_switch, operator,
                  KillSwitchBody, True),
            Route("POST", "/reload", "reload", "Reload the config directory. Every file is read again and "
                  "validated, diffed against what runs and turned into commands (register, deploy, set_limits, "
                  "retire), each journaled with the caller; a broken file (422) or a restart-only key changed "
                  "(409) refuses the whole reload, and nothing changes", self._reload, operator, command=True,
                  more_errors=(422,), answers=ReloadResult),
            Route("GET", "/reload", "last_reload", "The last reload (by SIGHUP or the API): its diff and commands",
                  self._last_reload, read, more_errors=(404,), answers=ReloadResult),
        ]
        return routes

    # ------------------------------------------------------------------------------------------ reads
    async def _health(self, request, caller, body):
        engine = self.engine

        def health():
            return {"status": "ok", "engine": engine.state.config.engine.name, "oms_up": engine.oms_up,
                    "uptime_s": round((engine.clock() - self.service.started_ns) / 1e9, 3)}
        return await self._read(health)

    async def _openapi(self, request, caller, body):
        return self.openapi

    async def _strategies(self, request, caller, body):
        return await self._read(lambda: report.strategy_summaries(self.engine.state, self.engine.control.results))

    async def _strategy(self, request, caller, body):
        state = self.engine.state
        name = request.match_info["name"]

        def detail():
            try:
                s = state.strategy_id(name)
            except KeyError as e:  # returned, not raised: an exception that crosses threads holds a cycle
                return ApiError(404, e.args[0])
            return report.strategy_detail(state, s, self.engine.control.results)
        return _raised(await self._read(detail))

    async def _accounts(self, request, caller, body):
        return await self._read(lambda: report.accounts_report(self.engine.state))

    async def _instruments(self, request, caller, body):
        return await self._read(lambda: report.instruments_report(self.engine.state))

    async def _counters(self, request, caller, body):
        engine = self.engine

        def counters():
            return {"counters": dict(zip(COUNTER_NAMES, engine.state.counters.tolist())),
                    "engine": engine.stats.as_dict()}
        return {**await self._read(counters), "api": self.stats.as_dict()}

    async def _transports(self, request, caller, body):
        engine = self.engine
        return await self._read(lambda: {"inbound": report.transports_report(engine),
                                         "oms": report.oms_report(engine)})

    async def _journal(self, request, caller, body):
        service = self.service
        return await self._read(lambda: {"enabled": service.engine.journal is not None,
                                         **({} if service.engine.journal is None else report.journal_report(service))})

    async def _command_result(self, request, caller, body):
        command_id = request.match_info["id"]
        result = await self._read(lambda: self.engine.control.results.get(command_id))
        if result is None:
            raise ApiError(404, f"no command {command_id!r} was applied (a refused command is not kept)")
        return result

    async def _read(self, fn):
        """fn() between two batches, on the engine's thread; its time there is recorded."""
        timed = functools.partial(self._timed, fn)
        if self.on_engine_thread:
            return timed()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self.engine.read(timed)), ENGINE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, f"the engine did not answer in {ENGINE_TIMEOUT_S:g} s") from None

    def _timed(self, fn):
        start = time.perf_counter_ns()
        try:
            return fn()
        finally:
            self.stats.read_ns.record_value(max(1, time.perf_counter_ns() - start))

    # ------------------------------------------------------------------------------------------ commands
    async def _register(self, request, caller, body):
        return await self._command(request, caller, Register, **msgspec.structs.asdict(body))

    async def _transition(self, action, request, caller, body):
        return await self._command(request, caller, Transition, strategy=request.match_info["name"],
                                   action=TRANSITIONS[action])

    async def _strategy_limits(self, request, caller, body):
        return await self._command(request, caller, SetLimits, strategy=request.match_info["name"],
                                   values=set_values(body))

    async def _account_limits(self, request, caller, body):
        return await self._command(request, caller, SetLimits, account=request.match_info["name"],
                                   values=set_values(body))

    async def _deploy(self, request, caller, body):
        return await self._strategy_command(request, caller, Deploy, body)

    async def _rollback(self, request, caller, body):
        return await self._strategy_command(request, caller, Rollback, body)

    async def _shadow(self, request, caller, body):
        return await self._strategy_command(request, caller, Shadow, body)

    async def _kill_switch(self, request, caller, body):
        return await self._command(request, caller, KillSwitch, **msgspec.structs.asdict(body))

    async def _reload(self, request, caller, body):
        key = request.headers.get("Idempotency-Key")
        try:
            key = None if key is None else msgspec.convert(key, CommandId)
        except msgspec.ValidationError as e:
            raise ApiError(400, f"Idempotency-Key: {e}", code="bad_field", field="Idempotency-Key") from None
        try:
            result = await self.service.reloader.reload(caller.actor, on_engine_thread=self.on_engine_thread, key=key)
        except ReloadRefused as e:
            raise ApiError(422 if e.invalid else 409, e.result.error, reload=e.result) from None
        if not result.ok:  # checked, submitted, and yet one was refused as applied (the state moved meanwhile)
            raise ApiError(409, f"reload partly applied: {result.error}: {'; '.join(result.problems)}",
                           reload=result)
        return result

    async def _last_reload(self, request, caller, body):
        last = self.service.reloader.last
        if last is None:
            raise ApiError(404, "no reload since the engine started")
        return last

    async def _strategy_command(self, request, caller, command_type, body):
        return await self._command(request, caller, command_type, strategy=request.match_info["name"],
                                   **msgspec.structs.asdict(body))

    async def _command(self, request, caller: Caller, command_type, **fields):
        """Submit the command; answer its result, or raise the engine's refusal."""
        command_id = request.headers.get("Idempotency-Key")
        try:
            command = msgspec.convert({**fields, "id": command_id, "actor": caller.actor}, command_type)
        except msgspec.ValidationError as e:
            problem = decode_problem(e)
            if problem.problem.field == "$.id":
                raise ApiError(400, f"Idempotency-Key: {problem}", code="bad_field", field="Idempotency-Key") from None
            raise problem from None
        self.stats.commands += 1
        future = asyncio.wrap_future(self.engine.control.submit(command))
        try:  # shielded: the engine applies it whatever becomes of this request
            result = await asyncio.wait_for(asyncio.shield(future), ENGINE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, f"the engine did not apply the command in {ENGINE_TIMEOUT_S:g} s; it may yet: "
                           f"GET /commands/{{id}} with its Idempotency-Key tells") from None
        if not result.ok:
            raise refusal(result)
        return result

    # ------------------------------------------------------------------------------------------ plumbing
    async def _endpoint(self, route, request):
        caller = self._authorize(request, route.role)
        body = await self._body(request, route.body) if route.body is not None else None
        return _json(200, await route.handler(request, caller, body))

    def _authorize(self, request, role):
        if role is None:
            return None
        caller = self.tokens.caller(request.headers.get("Authorization"))
        if caller is None:
            raise ApiError(401, "a bearer token is needed (Authorization: Bearer <token>), and not that one")
        if not caller.may(role):
            raise ApiError(403, f"{caller.actor} may not do this: it needs the {role} role")
        return caller

    async def _body(self, request, body_type):
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is {request.content_length} bytes; at most {MAX_BODY_BYTES} are read")
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                raw = await request.read()
        except TimeoutError:
            raise ApiError(408, f"the body did not arrive in {BODY_TIMEOUT_S:g} s") from None
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes") from None
        try:
            return msgspec.json.decode(raw if raw.strip() else b"{}", type=body_type)
        except msgspec.MsgspecError as e:
            raise decode_problem(e) from None

    @web.middleware
    async def _answer(self, request, handler):
        """Every answer: errors as ErrorResponse JSON (aiohttp's own 404, 405 and 413 too), counted by status."""
        try:
            response = await handler(request)
        except ApiError as e:
            e.__traceback__ = None  # its frames may hold it: a cycle, which the spin driver's process never collects
            response = _error(e)
        except web.HTTPException as e:
            if e.status not in CODES:
                raise
            e.__traceback__ = None
            response = _error(ApiError(e.status, e.reason if e.status != 404 else f"no route {request.path}"))
            if e.status == 405:
                response.headers["Allow"] = e.headers.get("Allow", "")
        except Exception as e:  # a bug: the caller hears of it, the engine goes on
            log.exception("API %s %s failed", request.method, request.path)
            response = _error(ApiError(500, f"internal error: {type(e).__name__}: {e}"))
        self.stats.answers[response.status] = self.stats.answers.get(response.status, 0) + 1
        return response


def _raised(data):
    if isinstance(data, ApiError):
        raise data
    return data


def _json(status, data):
    return web.Response(status=status, body=msgspec.json.encode(data, enc_hook=_plain),
                        content_type="application/json")


def _plain(value):
    """What JSON cannot hold as it is, in a command's detail or error: a numpy number as a number, else its text."""
    return value.item() if hasattr(value, "item") else str(value)


def _error(error: ApiError):
    response = _json(error.status, error.body())
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="orchestrator"'
    return response
