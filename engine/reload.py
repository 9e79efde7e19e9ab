"""Config hot reload (SIGHUP, `ctl reload`, POST /reload): the config directory read again, validated whole, diffed
against what runs, and the diff turned into the ordinary commands (engine/commands.py).

1. Off the engine's thread: every file loaded and cross-checked (engine/config `load`). A broken file refuses the
   whole reload; nothing is asked of the engine.
2. On the engine's thread, between two batches: the diff against what runs (each strategy's running version, its
   limits as set live, each account's limits as set live; the start config for everything else) and its
   commands: a new strategy file is Register, a changed one Deploy (SetLimits when only its live limits
   changed), a changed account limit SetLimits, a strategy whose file is gone Transition retire (the lifecycle
   table decides whether its state allows it). A change of a restart-only key (KEYS) refuses the reload, the key
   named. Each command is checked as the engine would apply it now; one refusal refuses the whole reload.
3. Only then the commands are submitted, in order, through the one command path: checked again, journaled with
   the actor, applied between batches. The result is the diff and each command's result.
"""
import asyncio
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from engine.commands import CommandResult, Deploy, Register, SetLimits, Transition
from engine.config.loader import ACCOUNTS_FILE, INSTRUMENTS_FILE, STRATEGIES_DIR, load
from engine.control import STRATEGY_KEYS
from kernels.dtypes import RETIRED

log = logging.getLogger("orchestrator.reload")

TIMEOUT_S = 5.0  # the engine applies the commands within this long, or the reload says it did not hear back

RESTART, SET_LIMITS, DEPLOY, IDENTITY = "restart", "set_limits", "deploy", "identity"

# Every config key and what a reload does when it changes: the one table (docs/api.md prints it; a test checks
# that every key of the schema is here). (file, key) -> (how, why). "*": every key of that file.
#   restart     refused while the engine runs: restart it to take the change (it recovers from its journal)
#   set_limits  SetLimits, live (a strategy file whose other keys changed too is a deploy, which carries it)
#   deploy      Deploy of the strategy's file: a new version, swapped in between batches
#   identity    a strategy is its name: a new name is Register, a name gone (its file removed) retire
KEYS = {
    ("engine.toml", "*"): (RESTART, "the arena is sized, the sockets bound, the journal and the API set up at start"),
    ("instruments.toml", "*"): (RESTART, "instrument ids and contracts are in every position, order and mark"),
    ("accounts.toml", "accounts"): (RESTART, "the account table is sized at start: one added or removed"),
    ("accounts.toml", "id"): (RESTART, "account ids are in every position and order"),
    ("accounts.toml", "name"): (RESTART, "strategies name their account"),
    ("accounts.toml", "kill_switch"): (RESTART, "read at start; throw it live with `ctl kill --account`"),
    **{("accounts.toml", key): (SET_LIMITS, "the account's limit") for key in (
        "max_gross_notional", "max_net_notional", "daily_loss_limit", "sides")},
    ("strategies/*.toml", "name"): (IDENTITY, "a new name is registered, a name whose file is gone retired"),
    ("strategies/*.toml", "account"): (RESTART, "positions and working orders belong to the account"),
    **{("strategies/*.toml", key): (DEPLOY, "a new version") for key in (
        "version", "signals", "instruments", "order_type", "order_logic")},
    ("strategies/*.toml", "enabled"): (DEPLOY, "a new version; read at register only: a deploy keeps the state"),
    **{("strategies/*.toml", f"{section}.{key}"): (SET_LIMITS, f"a live [{section}] value")
       for key, section in STRATEGY_KEYS.items()},
}
_STRATEGY_LIVE = {f"{section}.{key}": key for key, section in STRATEGY_KEYS.items()}  # key path -> SetLimits key


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One key that differs between the files and what runs."""
    file: str               # relative to the config directory
    key: str                # its path in the file ("limits.max_order_qty"; "instruments[ESZ5].tick_size")
    before: Any = None      # what runs (None: nothing, e.g. a new strategy)
    after: Any = None       # what the file says (None: nothing, e.g. a file removed)
    how: str                # KEYS' word: restart, set_limits, deploy, identity
    command: str | None = None  # the command it became ("deploy momentum"); None for a refused key


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    config: str                        # the engine file read again
    actor: str
    at_ns: int
    changes: list[Change] = []
    commands: list[CommandResult] = []  # in the order applied
    problems: list[str] = []           # why it was refused (every problem found), or which command failed
    error: str | None = None           # one line: why it was refused; None when applied


class ReloadRefused(Exception):
    """Not applied, nothing submitted; `result` says why. `invalid`: the config does not load (else it loads but
    asks for what the running engine cannot do, or a reload is running already)."""

    def __init__(self, result, invalid=False):
        super().__init__(result.error)
        self.result, self.invalid = result, invalid


def classify(file, key):
    """KEYS' (how, why) for the key path `key` of `file` (a strategy file as "strategies/*.toml")."""
    kind = "strategies/*.toml" if file.startswith(f"{STRATEGIES_DIR}/") else file
    key = re.sub(r"^\w+\[[^\]]*\]\.", "", key)  # "accounts[futures].sides" -> "sides"
    for probe in (key, key.split("[", 1)[0].split(".", 1)[0], "*"):
        if (kind, probe) in KEYS:
            return KEYS[kind, probe]
    return RESTART, "not classified: restart-only by default"


class Reloader:
    """The reloads of one service (engine/service.py Service): one at a time, the last one kept (GET /reload)."""

    def __init__(self, service):
        self.service = service
        self.engine = service.engine
        self.last: ReloadResult | None = None
        self._lock = threading.Lock()

    async def reload(self, actor, *, on_engine_thread, key=None) -> ReloadResult:
        """Reload the config; `on_engine_thread`: running on the event driver's loop (the engine's state is read
        directly), else between two steps of the spin driver. `key`: the command ids are "<key>.1", "<key>.2"...
        Raises ReloadRefused (nothing was submitted) with the result."""
        state = self.engine.state
        path = state.config.engine_file
        if not self._lock.acquire(blocking=False):
            raise ReloadRefused(self._refused(actor, [], ["a reload is running already: try again once it is done"],
                                              keep=False))
        try:
            config, problems, restart = await asyncio.to_thread(_load, state.config, path)
            if problems:
                raise ReloadRefused(self._refused(actor, [], problems, "the config does not load"), invalid=True)

            def plan_and_submit():
                changes, commands, refusals = plan(state, config, actor, key, restart)
                if not refusals:
                    refusals = [p for command, spec, file in commands
                                if (p := _dry_run(self.engine.control, command, spec, file))]
                if refusals:
                    return changes, refusals
                return changes, [self.engine.control.submit(command) for command, _, _ in commands]
            if on_engine_thread:
                changes, outcome = plan_and_submit()
            else:
                try:
                    changes, outcome = await asyncio.wait_for(
                        asyncio.wrap_future(self.engine.read(plan_and_submit)), TIMEOUT_S)
                except TimeoutError:
                    raise ReloadRefused(self._refused(actor, [], [f"the engine did not answer in {TIMEOUT_S:g} s: "
                                                                  f"nothing was submitted"])) from None
            if outcome and isinstance(outcome[0], str):
                raise ReloadRefused(self._refused(actor, changes, outcome))
            results, failed = [], []
            for future in outcome:
                try:
                    results.append(await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), TIMEOUT_S))
                except TimeoutError:  # submitted: the engine may yet apply it (GET /commands/{id} tells)
                    failed.append(f"a command was not applied within {TIMEOUT_S:g} s; it may yet be")
                    break
            failed += [f"{r.command} {r.id}: {r.error}" for r in results if not r.ok]
            result = ReloadResult(ok=not failed, config=path, actor=actor, at_ns=time.time_ns(), changes=changes,
                                  commands=results, problems=failed,
                                  error=f"{len(failed)} of {len(outcome)} commands not applied" if failed else None)
            self._done(result)
            return result
        finally:
            self._lock.release()

    def reload_blocking(self, actor):
        """A reload from a thread that is not the engine's (SIGHUP beside the spin driver)."""
        try:
            return asyncio.run(self.reload(actor, on_engine_thread=False))
        except ReloadRefused as e:
            return e.result

    def _refused(self, actor, changes, problems, why=None, keep=True):
        """The result of a refused reload (logged; kept as the last one unless `keep` is false)."""
        path = self.engine.state.config.engine_file
        result = ReloadResult(ok=False, config=path, actor=actor, at_ns=time.time_ns(), changes=changes,
                              problems=problems, error=f"reload refused, nothing changed: {why or problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        if keep:
            self._done(result)
        return result

    def _done(self, result):
        self.last = result
        if result.ok:
            log.warning("reload by %s: %d changes, %d commands applied%s", result.actor, len(result.changes),
                        len(result.commands), "".join(f"; {c.command} {c.detail}" for c in result.commands))
        else:
            log.error("reload by %s: %s%s", result.actor, result.error, "".join(f"\n  {p}" for p in result.problems))


def _load(running, path):
    """Off the engine's thread: (config, problems, restart_changes) of the files at `path`."""
    config, problems = load(path)
    return config, problems, None if config is None else restart_changes(running, config)


def _dry_run(control, command, spec, file):
    problem = control.check(command, spec)
    return None if problem is None else f"{file}: {_describe(command)}: {problem}"


def _describe(command):
    if isinstance(command, Register):
        return f"register {command.file}"
    if isinstance(command, Deploy):
        return f"deploy {command.strategy}"
    if isinstance(command, Transition):
        return f"{command.action} {command.strategy}"
    return f"set_limits {command.strategy or command.account}"


# ------------------------------------------------------------------------------------------------- the diff
def restart_changes(running, config):
    """(changes, refusals) of the keys compared with the start config (immutable: any thread may compare them):
    engine.toml, instruments.toml, the accounts' ids, names and kill switches. Each is restart-only."""
    changes, refusals = [], []

    def refuse(file, key_path, before, after, kind=None):
        how, why = classify(kind or file, key_path)
        if "token" in key_path:  # api.tokens holds secrets: neither side is shown
            before = after = "(not shown)"
        changes.append(Change(file=file, key=key_path, before=before, after=after, how=how))
        refusals.append(f"{file}: {key_path} is restart-only ({why}): {before!r} -> {after!r}; restart the "
                        f"engine to take it")

    for key_path, before, after in _diff(_plain(running.engine), _plain(config.engine)):
        refuse(Path(running.engine_file).name, key_path, before, after, kind="engine.toml")  # or engine-aeron.toml
    for key_path, before, after in _diff(_by(running.instruments, "symbol"), _by(config.instruments, "symbol")):
        refuse(INSTRUMENTS_FILE, f"instruments{key_path}", before, after)
    start = {spec.name: _plain(spec) for spec in running.accounts}
    files = {spec.name: _plain(spec) for spec in config.accounts}
    for name in sorted(set(start) ^ set(files)):
        refuse(ACCOUNTS_FILE, f"accounts[{name}]", start.get(name), files.get(name))
    for name in sorted(set(start) & set(files)):
        for key_path, before, after in _diff(start[name], files[name]):
            if classify(ACCOUNTS_FILE, key_path)[0] == RESTART:
                refuse(ACCOUNTS_FILE, f"accounts[{name}].{key_path}", before, after)
    return changes, refusals


def plan(state, config, actor, key=None, restart=None):
    """(changes, [(command, spec or None, file)], refusals) that make what runs match `config`, on the engine's
    thread; `restart`: restart_changes(state.config, config), if worked out already (off that thread)."""
    changes, refusals = restart or restart_changes(state.config, config)
    changes, refusals, commands = list(changes), list(refusals), []
    ids = (f"{key[:56]}.{n}" for n in range(1, 1 << 30)) if key else iter(lambda: None, 0)

    def add(command_type, origin, spec=None, **fields):
        command = msgspec.convert({**fields, "id": next(ids), "actor": actor}, command_type)
        commands.append((command, spec, origin))
        return _describe(command)

    # accounts' limits: against what runs (set live or not)
    now = {spec.name: spec for spec in state.account_specs}
    for spec in config.accounts:
        if spec.name not in now or now[spec.name] == spec:
            continue  # not in the table: refused above (it is sized at start); equal Structs: nothing to diff
        values = {}
        for key_path, before, after in _diff(_plain(now[spec.name]), _plain(spec)):
            if classify(ACCOUNTS_FILE, key_path)[0] == SET_LIMITS:
                values[key_path] = after
                changes.append(Change(file=ACCOUNTS_FILE, key=f"accounts[{spec.name}].{key_path}", before=before,
                                      after=after, how=SET_LIMITS, command=f"set_limits {spec.name}"))
        if values:
            add(SetLimits, ACCOUNTS_FILE, account=spec.name, values=values)

    # strategies: by name
    shadows = {run.row for run in state.shadows}
    live = {name: s for s, name in enumerate(state.strategy_names) if s not in shadows}
    files = {spec.name: (spec, file.rpartition("/")[2]) for spec, file in zip(config.strategies, config.strategy_files)}
    for name, (spec, file_name) in files.items():
        where = f"{STRATEGIES_DIR}/{file_name}"
        if name not in live:
            changes.append(Change(file=where, key="name", after=name, how=IDENTITY,
                                  command=add(Register, where, spec, file=file_name)))
            continue
        s = live[name]
        deploy = state.deploys[s][-1]
        if deploy.spec == spec:  # Structs compare field by field, fast: the diff only for what differs
            continue
        diff = list(_diff(_plain(deploy.spec), _plain(spec)))
        if not diff:
            continue
        if int(state.strategies[s]["state"]) == RETIRED:
            refusals.append(f"{where}: {name} is RETIRED and its file differs from its last version: a retired "
                            f"strategy takes no new version (give it a new name to register it, or remove the file)")
            changes += [Change(file=where, key=k, before=b, after=a, how=classify(where, k)[0]) for k, b, a in diff]
            continue
        restart_only = [(k, b, a, classify(where, k)[1]) for k, b, a in diff if classify(where, k)[0] == RESTART]
        for k, b, a, why in restart_only:
            changes.append(Change(file=where, key=k, before=b, after=a, how=RESTART))
            refusals.append(f"{where}: {k} is restart-only ({why}): {b!r} -> {a!r}; restart the engine to take it")
        if restart_only:
            continue
        if all(k in _STRATEGY_LIVE for k, _, _ in diff):
            command = add(SetLimits, where, strategy=name, values={_STRATEGY_LIVE[k]: a for k, _, a in diff})
        else:
            command = add(Deploy, where, spec, strategy=name, file=file_name)
        changes += [Change(file=where, key=k, before=b, after=a, how=classify(where, k)[0], command=command)
                    for k, b, a in diff]
    for name, s in live.items():
        if name not in files and int(state.strategies[s]["state"]) != RETIRED:
            where = f"{STRATEGIES_DIR}/{Path(state.deploys[s][-1].source).name}"
            changes.append(Change(file=where, key="name", before=name, how=IDENTITY,
                                  command=add(Transition, where, strategy=name, action="retire")))
    return changes, commands, refusals


def _plain(struct):
    return None if struct is None else msgspec.to_builtins(struct)


def _by(rows, name_key):
    return {f"[{row[name_key]}]": row for row in map(_plain, rows)}


def _diff(before, after, prefix=""):
    """(key path, before, after) of every leaf that differs; a table present on one side only is one leaf."""
    if isinstance(before, dict) and isinstance(after, dict):
        for k in {**before, **after}:
            sep = "" if k.startswith("[") or not prefix else "."
            yield from _diff(before.get(k), after.get(k), f"{prefix}{sep}{k}")
    elif before != after:
        yield prefix, before, after

