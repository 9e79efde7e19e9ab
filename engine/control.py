"""The one mutation path outside the batch: commands are checked, journaled and applied between batches.

`Control.submit(command)` (any thread: the REST API, the ctl tool's requests) queues a command and returns a
Future of its CommandResult; the driver calls `apply_pending(now)` at the top of every step, so a command never
runs while a kernel does. `apply(command, now)` is the same, at once (the engine's own commands: the OMS link
policy, local cancels). Each command is:
1. looked up by id: a retry of an applied id returns the first result (`repeated`), changing nothing;
2. checked against the lifecycle table, the names and the config schema: a refusal is a CommandResult with a
   clear `error`, and nothing changed (nothing journaled either);
3. journaled (engine/journal.py `Applied`, with the stream position), then applied.
A replay (recovery, `replay`, `simulate`) applies journaled commands with `replay(command, at_ns)`: the same
checks and the same code, no journal, no outbound traffic.
"""
import itertools
import logging
import threading
from collections import deque
from concurrent.futures import Future

import msgspec

from engine.commands import CancelUnsent, CommandResult, HaltAll, KillSwitch, SetLimits, Transition
from engine.config.schema import Account, Strategy
from kernels.breakers import reset_breakers
from kernels.dtypes import (
    ACTIVE, EV_ACTIVATE, EV_DEACTIVATE, EV_HALT, EV_PAUSE, EV_REDUCE, EV_RESET, EV_RETIRE, HALTED, KILL_ACCOUNT,
    KILL_GLOBAL, NO_TRIP, PAUSED, READY, REDUCING, STATE_NAMES,
)
from kernels.lifecycle import IllegalTransition, next_state

log = logging.getLogger("orchestrator.control")

EVENTS = {"activate": EV_ACTIVATE, "pause": EV_PAUSE, "resume": EV_ACTIVATE, "reduce_only": EV_REDUCE,
          "halt": EV_HALT, "reset": EV_RESET, "deactivate": EV_DEACTIVATE, "retire": EV_RETIRE}
_BREAKER_STATES = (HALTED, REDUCING)
# a live-settable strategy key -> the section of the strategy file it lives in
STRATEGY_KEYS = {**{k: "sizing" for k in ("max_position",)},
                 **{k: "limits" for k in ("max_order_qty", "max_order_notional", "max_open_orders", "rate_per_second",
                                          "burst", "daily_loss_limit")},
                 **{k: "breakers" for k in ("max_consecutive_rejects", "max_reject_ratio", "ratio_window_ms",
                                            "ratio_min_orders", "max_drawdown", "loss_limit", "action",
                                            "cooldown_ms")}}
ACCOUNT_KEYS = ("max_gross_notional", "max_net_notional", "daily_loss_limit")


class CommandError(ValueError):
    """A command that cannot be applied as asked; nothing changed."""


class Control:
    """Commands for one engine (engine/driver.py Engine): the queue, the applied ids, the application."""

    def __init__(self, engine, journal=None):
        self.engine = engine
        self.state = engine.state
        self.journal = journal
        self.results: dict[str, CommandResult] = {}  # every applied id -> its result (a retry returns it)
        self._queue = deque()
        self._lock = threading.Lock()
        self._auto_ids = itertools.count(1)

    # ------------------------------------------------------------------------------------------ entry points
    def submit(self, command) -> Future:
        """Queue a command from any thread; the Future resolves once the driver has applied (or refused) it."""
        future = Future()
        with self._lock:
            self._queue.append((command, future))
        self.engine.wake()
        return future

    @property
    def pending(self):
        """Commands queued and not yet applied (the spin driver runs a step for them)."""
        return len(self._queue)

    def apply_pending(self, now_ns):
        """Apply every queued command, in order (the driver's thread, between batches)."""
        while self._queue:
            with self._lock:
                command, future = self._queue.popleft()
            try:
                result = self.apply(command, now_ns)
            except Exception as e:  # a bug, not a refusal: the caller hears of it, the engine goes on
                log.exception("command %r failed", command)
                future.set_exception(e)
            else:
                future.set_result(result)

    def apply(self, command, now_ns) -> CommandResult:
        """Check, journal and apply one command now; return its result (refusals included, never raised)."""
        if command.id is None:
            command = msgspec.structs.replace(command, id=self._fresh_id())
        if command.id in self.results:
            return msgspec.structs.replace(self.results[command.id], repeated=True)
        name = type(command).__struct_config__.tag
        try:
            change = self._check(command)
        except (CommandError, KeyError, IllegalTransition, msgspec.ValidationError) as e:
            return CommandResult(id=command.id, ok=False, command=name, error=_message(e))
        seq = 0
        if self.journal is not None:
            chunks, nbytes = self.engine.pending_input()
            seq = self.journal.applied(now_ns, chunks, nbytes, command)
        detail = change(now_ns, live=True)
        result = CommandResult(id=command.id, ok=True, command=name, detail=detail, seq=seq)
        self.results[command.id] = result
        log.info("command %s %s by %s: %s", command.id, name, command.actor, detail)
        return result

    def replay(self, command, at_ns, seq=0):
        """Apply a journaled command again (recovery and replays): same checks, same effect, nothing sent."""
        change = self._check(command)
        self.results[command.id] = CommandResult(id=command.id, ok=True, command=type(command).__struct_config__.tag,
                                                 detail=change(at_ns, live=False), seq=seq)

    def _fresh_id(self):
        while (candidate := f"auto-{next(self._auto_ids)}") in self.results:
            pass
        return candidate

    def _check(self, command):
        """Validate `command` against the state now; return change(now_ns, live) -> detail, which applies it."""
        return {Transition: self._transition, SetLimits: self._set_limits, KillSwitch: self._kill_switch,
                HaltAll: self._halt_all, CancelUnsent: self._cancel_unsent}[type(command)](command)

    # ------------------------------------------------------------------------------------------ lifecycle
    def _transition(self, command):
        state = self.state
        s = state.strategy_id(command.strategy)
        row = state.strategies[s]
        before = int(row["state"])
        if command.action == "resume" and before != PAUSED:
            raise CommandError(f"cannot resume a strategy in state {STATE_NAMES[before]}: resume is for PAUSED "
                               f"(activate it instead)")
        event = EVENTS[command.action]
        after = next_state(before, event)

        def change(now_ns, live):
            row["state"] = after
            row["trip_cause"] = NO_TRIP  # the operator takes over from the breaker: no cool-down undoes this
            if event == EV_RESET or (before in _BREAKER_STATES and after in (READY, ACTIVE)):
                reset_breakers(state.strategies, s, now_ns)  # the kernel's one reset: judged afresh from now
            return {"strategy": command.strategy, "from": STATE_NAMES[before], "to": STATE_NAMES[after]}
        return change

    def _halt_all(self, command):
        event = EV_HALT if command.policy == "halt" else EV_REDUCE
        strategies = self.state.strategies
        moving = [s for s in range(len(strategies))
                  if strategies[s]["state"] == ACTIVE or (strategies[s]["state"] == REDUCING and event == EV_HALT)]

        def change(now_ns, live):
            for s in moving:
                strategies[s]["state"] = next_state(int(strategies[s]["state"]), event)
            return {"policy": command.policy, "reason": command.reason,
                    "moved": [self.state.strategy_names[s] for s in moving]}
        return change

    # ------------------------------------------------------------------------------------------ limits
    def _set_limits(self, command):
        state = self.state
        if (command.strategy is None) == (command.account is None):
            raise CommandError("name either a strategy or an account")
        if not command.values:
            raise CommandError("no values to set")
        if command.strategy is not None:
            s = state.strategy_id(command.strategy)
            unknown = sorted(set(command.values) - set(STRATEGY_KEYS))
            if unknown:
                raise CommandError(f"not a strategy limit: {', '.join(unknown)}; "
                                   f"settable: {', '.join(STRATEGY_KEYS)}")
            deploy = state.deploys[s][-1]
            doc = msgspec.to_builtins(deploy.spec)
            for key, value in command.values.items():
                doc[STRATEGY_KEYS[key]][key] = value
            spec = msgspec.convert(doc, Strategy)  # the schema's own checks: types, ranges, cross-field rules

            def change(now_ns, live):
                state.deploys[s][-1] = msgspec.structs.replace(deploy, spec=spec)
                state.write_strategy_params(s, spec, deploy.number)
                return {"strategy": command.strategy, "set": dict(command.values)}
            return change
        a = state.account_id(command.account)
        unknown = sorted(set(command.values) - set(ACCOUNT_KEYS))
        if unknown:
            raise CommandError(f"not an account limit: {', '.join(unknown)}; settable: {', '.join(ACCOUNT_KEYS)}")
        spec = msgspec.convert({**msgspec.to_builtins(state.account_specs[a]), **command.values}, Account)

        def change(now_ns, live):
            state.account_specs[a] = spec
            state.write_account_limits(a, spec)
            return {"account": command.account, "set": dict(command.values)}
        return change

    # ------------------------------------------------------------------------------------------ kill switches
    def _kill_switch(self, command):
        state = self.state
        if command.scope == "global":
            if command.name is not None:
                raise CommandError("the global kill switch takes no name")
            rows, table, bit = list(range(len(state.accounts))), state.accounts, KILL_GLOBAL
            owner = "account"
        elif command.name is None:
            raise CommandError(f"name the {command.scope} whose kill switch to set")
        elif command.scope == "account":
            rows, table, bit, owner = [state.account_id(command.name)], state.accounts, KILL_ACCOUNT, "account"
        else:
            rows, table, bit, owner = [state.strategy_id(command.name)], state.strategies, 1, "strategy"

        def change(now_ns, live):
            for row in rows:
                flags = int(table[row]["kill"])
                table[row]["kill"] = (flags | bit) if command.on else (flags & ~bit)
            canceled = []
            if command.on:
                orders = state.open_orders
                chosen = set(rows)
                canceled = [slot for slot in range(len(orders))
                            if orders[slot]["live"] and int(orders[slot][owner]) in chosen]
                for slot in canceled:
                    self.engine.request_cancel(slot, now_ns, live)
            return {"scope": command.scope, "name": command.name, "on": command.on,
                    "cancel_requests": len(canceled)}
        return change

    # ------------------------------------------------------------------------------------------ local cancels
    def _cancel_unsent(self, command):
        def change(now_ns, live):
            return {"canceled": self.engine.cancel_locally(command.order_ids, now_ns)}
        return change


def _message(error):
    if isinstance(error, KeyError):
        return error.args[0]
    return str(error)
