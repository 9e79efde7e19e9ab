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
from pathlib import Path

import msgspec

from engine.commands import (
    CancelUnsent, CommandResult, HaltAll, KillSwitch, Register, Rollback, SetLimits, Shadow, Transition,
)
from engine.commands import Deploy as DeployCommand
from engine.config.errors import ConfigError
from engine.config.loader import STRATEGIES_DIR, load_strategy, strategy_hash
from engine.config.schema import Account, Strategy
from engine.faults import crash_point
from engine.state import Deploy, ShadowRun
from kernels.arena import S_STRATEGIES
from kernels.breakers import reset_breakers
from kernels.dtypes import (
    ACTIVE, EV_ACTIVATE, EV_DEACTIVATE, EV_HALT, EV_PAUSE, EV_REDUCE, EV_RESET, EV_RETIRE, HALTED, KILL_ACCOUNT,
    KILL_GLOBAL, NO_TRIP, PAUSED, READY, REDUCING, RETIRED, STATE_NAMES,
)
from kernels.lifecycle import IllegalTransition, next_state

log = logging.getLogger("orchestrator.control")

EVENTS = {"activate": EV_ACTIVATE, "pause": EV_PAUSE, "resume": EV_ACTIVATE, "reduce_only": EV_REDUCE,
          "halt": EV_HALT, "reset": EV_RESET, "deactivate": EV_DEACTIVATE, "retire": EV_RETIRE}
_BREAKER_STATES = (HALTED, REDUCING)
# a live-settable strategy key -> the section of the strategy file it lives in
STRATEGY_KEYS = {**{k: "sizing" for k in ("max_position",)},
                 **{k: "limits" for k in ("max_order_qty", "max_order_notional", "max_open_orders", "rate_per_second",
                                          "burst", "daily_loss_limit", "sides", "duplicate_window_ms")},
                 **{k: "breakers" for k in ("max_consecutive_rejects", "max_reject_ratio", "ratio_window_ms",
                                            "ratio_min_orders", "max_drawdown", "loss_limit", "action",
                                            "cooldown_ms", "max_fills_per_window", "fill_window_ms",
                                            "max_off_band_fills")}}
ACCOUNT_KEYS = ("max_gross_notional", "max_net_notional", "daily_loss_limit", "sides")


class CommandError(ValueError):
    """A command that cannot be applied as asked; nothing changed."""


_REFUSALS = (CommandError, ConfigError, KeyError, IllegalTransition, msgspec.ValidationError)


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
        """Apply every queued command, in order (the driver's thread, between batches); the callers hear back once
        their commands are on disk (or the journal said it could not write them)."""
        done = []
        while self._queue:
            with self._lock:
                command, future = self._queue.popleft()
            try:
                done.append((future, self.apply(command, now_ns)))
            except Exception as e:  # a bug, not a refusal: the caller hears of it, the engine goes on
                log.exception("command %r failed", command)
                future.set_exception(e)
        for future, result in done:
            future.set_result(result)

    def apply(self, command, now_ns) -> CommandResult:
        """Check, journal (written before anything changes) and apply one command now; return its result
        (refusals included, never raised)."""
        if command.id is None:
            command = msgspec.structs.replace(command, id=self._fresh_id())
        if command.id in self.results:
            return msgspec.structs.replace(self.results[command.id], repeated=True)
        name = type(command).__struct_config__.tag
        try:
            change, spec = self._check(command)
        except _REFUSALS as e:
            return CommandResult(id=command.id, ok=False, command=name, error=_message(e))
        seq = 0
        if self.journal is not None:
            chunks, nbytes = self.engine.pending_input()
            seq = self.journal.applied(now_ns, chunks, nbytes, command, spec)
            self.journal.commit()  # on disk before it takes effect (a failure is the journal's policy's)
        crash_point(f"command.{name}")
        detail = change(now_ns, live=True)
        result = CommandResult(id=command.id, ok=True, command=name, detail=detail, seq=seq)
        self.results[command.id] = result
        log.info("command %s %s by %s: %s", command.id, name, command.actor, detail)
        return result

    def check(self, command, spec=None) -> str | None:
        """The refusal `apply` would answer `command` with now, or None; nothing changes, nothing is journaled
        (a config reload checks all its commands before it submits one). `spec`: the strategy a register or
        deploy names, as read already (no file is read again)."""
        try:
            self._check(command, spec)
        except _REFUSALS as e:
            return _message(e)
        return None

    def replay(self, command, at_ns, seq=0, spec=None):
        """Apply a journaled command again (recovery and replays): same checks, same effect, nothing sent; a
        strategy file is not read again, the spec journaled with the command is used."""
        change, _ = self._check(command, spec)
        self.results[command.id] = CommandResult(id=command.id, ok=True, command=type(command).__struct_config__.tag,
                                                 detail=change(at_ns, live=False), seq=seq)

    def _fresh_id(self):
        while (candidate := f"auto-{next(self._auto_ids)}") in self.results:
            pass
        return candidate

    def _check(self, command, spec=None):
        """Validate `command` against the state now: (change(now_ns, live) -> detail, which applies it; the
        strategy spec it resolved from a file, journaled with it, or None). `spec` given: use it, read no file."""
        if type(command) in (Register, DeployCommand) or (type(command) is Shadow and command.on):
            return self._deploys(command, spec)
        return {Transition: self._transition, SetLimits: self._set_limits, KillSwitch: self._kill_switch,
                Rollback: self._rollback, Shadow: self._stop_shadow, HaltAll: self._halt_all,
                CancelUnsent: self._cancel_unsent}[type(command)](command), None

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
            if after == RETIRED:
                state.index_subscriptions()  # a retired strategy hears no more signals
            return {"strategy": command.strategy, "from": STATE_NAMES[before], "to": STATE_NAMES[after]}
        return change

    def _halt_all(self, command):
        event = EV_HALT if command.policy == "halt" else EV_REDUCE
        strategies = self.state.strategies
        moving = [s for s in range(len(self.state.strategy_names))
                  if strategies[s]["state"] == ACTIVE or (strategies[s]["state"] == REDUCING and event == EV_HALT)]

        def change(now_ns, live):
            for s in moving:
                strategies[s]["state"] = next_state(int(strategies[s]["state"]), event)
            return {"policy": command.policy, "reason": command.reason,
                    "moved": [self.state.strategy_names[s] for s in moving]}
        return change

    # ------------------------------------------------------------------------------------------ versions
    def _deploys(self, command, spec):
        """Register a strategy from a file, deploy a new version of one, or start a shadow of one: the file read
        and checked here (off the hot path), the change applied between batches."""
        state = self.state
        if type(command) is Register:
            file = command.file
        else:
            s = state.strategy_id(command.strategy)
            file = command.file or Path(state.deploys[s][-1].source).name
        source = str(Path(state.config.root) / STRATEGIES_DIR / file)
        if spec is None:
            spec, _, _ = load_strategy(state.config, file)
        digest = strategy_hash(spec)
        if type(command) is Register:
            return self._register(command, spec, digest, source), spec
        if spec.name != command.strategy:
            raise CommandError(f"{source} holds strategy {spec.name!r}, not {command.strategy!r}")
        if type(command) is Shadow:
            return self._start_shadow(command, s, spec, digest, source), spec
        running = state.deploys[s][-1]
        if digest == running.config_hash:
            raise CommandError(f"nothing to deploy: {source} is the running version {running.version} "
                               f"(deploy {running.number})")
        return self._swap(command, s, spec, digest, source), spec

    def _register(self, command, spec, digest, source):
        state = self.state
        if spec.name in state.strategy_ids:
            raise CommandError(f"strategy {spec.name!r} is registered already: deploy a new version of it instead")
        s = self._free_row()
        self._check_room(s, spec)

        def change(now_ns, live):
            row = self._add_row(s, spec.name, spec, Deploy(number=1, version=spec.version, config_hash=digest,
                                                             source=source, spec=spec, deployed_ns=now_ns,
                                                             actor=command.actor), now_ns)
            row["state"] = ACTIVE if spec.enabled else READY
            state.index_subscriptions()
            return {"strategy": spec.name, "id": s, "version": spec.version, "deploy": 1,
                    "state": STATE_NAMES[int(row["state"])]}
        return change

    def _free_row(self):
        state = self.state
        s = len(state.strategy_names)
        if s >= len(state.strategies):
            raise CommandError(f"no room for another strategy: {s} rows in use (strategies and shadows), engine.toml "
                               f"max_strategies = {len(state.strategies)}")
        return s

    def _add_row(self, s, name, spec, deploy, now_ns):
        """Strategy row s takes `spec` under `name`: configured fields written, live state fresh (a full token
        bucket, no trip, no P&L)."""
        state = self.state
        state.strategy_names.append(name)
        state.strategy_ids[name] = s
        state.deploys.append([deploy])
        row = state.strategies[s]
        row["trip_cause"] = NO_TRIP
        row["tokens"] = spec.limits.burst
        row["tokens_ts_ns"] = now_ns
        row["peak_pnl"] = 0.0
        state.write_strategy_params(s, spec, deploy.number)
        state.scalars[S_STRATEGIES] = s + 1
        return row

    # ------------------------------------------------------------------------------------------ shadows
    def _running_shadow(self, s):
        return next((run for run in self.state.shadows if run.live == s and not run.stopped_ns), None)

    def _start_shadow(self, command, s, spec, digest, source):
        state = self.state
        running = state.deploys[s][-1]
        if self._running_shadow(s) is not None:
            raise CommandError(f"{command.strategy} has a shadow running already: stop it first")
        if digest == running.config_hash:
            raise CommandError(f"{source} is the running version {running.version}: nothing to compare")
        if spec.account != running.spec.account:
            raise CommandError(f"a shadow trades the live version's account {running.spec.account!r}, not "
                               f"{spec.account!r}")
        row_id = self._free_row()
        self._check_room(-1, spec)
        name = f"{command.strategy}.shadow{sum(run.live == s for run in state.shadows) + 1}"

        def change(now_ns, live):
            row = self._add_row(row_id, name, spec, Deploy(number=running.number + 1, version=spec.version,
                                                            config_hash=digest, source=source, spec=spec,
                                                            deployed_ns=now_ns, actor=command.actor,
                                                            note=f"shadow of {command.strategy}"), now_ns)
            row["state"] = ACTIVE
            row["shadow_of"] = s + 1
            state.shadows.append(ShadowRun(live=s, row=row_id, version=spec.version, started_ns=now_ns,
                                           baseline=state.order_counts(s),
                                           baseline_reasons=state.reason_counts[s].tolist()))
            state.index_subscriptions()
            return {"strategy": command.strategy, "shadow": name, "version": spec.version}
        return change

    def _stop_shadow(self, command):
        state = self.state
        run = self._running_shadow(state.strategy_id(command.strategy))
        if run is None:
            raise CommandError(f"{command.strategy} has no shadow running")

        def change(now_ns, live):
            self._end_shadow(run, now_ns)
            return {"strategy": command.strategy, "shadow": state.strategy_names[run.row], "stopped": True}
        return change

    def _end_shadow(self, run, now_ns):
        run.stopped_ns = now_ns
        self.state.strategies[run.row]["state"] = RETIRED
        self.state.index_subscriptions()

    def _rollback(self, command):
        state = self.state
        s = state.strategy_id(command.strategy)
        history = state.deploys[s]
        if command.to is None:
            if len(history) < 2:
                raise CommandError(f"{command.strategy} has run one version only (deploy {history[-1].number}): "
                                   f"nothing to roll back to")
            target = history[-2]
        else:
            target = next((d for d in history if d.number == command.to), None)
            if target is None:
                raise CommandError(f"{command.strategy} has no deploy {command.to}; deploys: "
                                   f"{', '.join(str(d.number) for d in history)}")
            if target is history[-1]:
                raise CommandError(f"deploy {command.to} is the running one")
        return self._swap(command, s, target.spec, target.config_hash, target.source,
                          note=f"rollback to deploy {target.number}")

    def _swap(self, command, s, spec, digest, source, note=""):
        """The new version takes strategy s's row between batches: its limits, signals, instruments and the next
        deploy number; positions, P&L, working orders, lifecycle state and breakers stay with the name."""
        state = self.state
        running = state.deploys[s][-1]
        if spec.account != running.spec.account:
            raise CommandError(f"a deploy cannot move {spec.name} from account {running.spec.account!r} to "
                               f"{spec.account!r}: positions and working orders belong to the account")
        self._check_room(s, spec)

        def change(now_ns, live):
            number = running.number + 1
            state.deploys[s].append(Deploy(number=number, version=spec.version, config_hash=digest, source=source,
                                           spec=spec, deployed_ns=now_ns, actor=command.actor, note=note))
            state.write_strategy_params(s, spec, number)
            shadow = self._running_shadow(s)
            if shadow is not None:  # promoted, or replaced: a deploy ends the comparison
                self._end_shadow(shadow, now_ns)
            state.index_subscriptions()
            return {"strategy": spec.name, "from": {"version": running.version, "deploy": running.number},
                    "to": {"version": spec.version, "deploy": number}, **({"note": note} if note else {})}
        return change

    def _check_room(self, s, spec):
        """A strategy's signals must fit the subscription index once it runs `spec`."""
        state = self.state
        others = sum(len(state.deploys[t][-1].spec.signals) for t in range(len(state.strategy_names))
                     if t != s and state.strategies[t]["state"] != RETIRED)
        if others + len(spec.signals) > len(state.sub_strategy):
            raise CommandError(f"no room for {len(spec.signals)} more subscriptions: engine.toml max_subscriptions "
                               f"= {len(state.sub_strategy)}")

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
