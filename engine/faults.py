"""Named crash points, for the crash tests: the real process kills itself (SIGKILL) at a named point.

`ORCHESTRATOR_CRASH_AT=name` (or `name:N`, the N-th time the point is reached) in the environment of an
`orchestrator run` makes `crash_point(name)` send SIGKILL to its own process there: no handler runs, nothing is
flushed, exactly as if the host had killed it. Unset (always, outside tests), a crash point costs a dict lookup.
Points: "snapshot.write" (half a snapshot on disk), "command.<name>" (a command checked and journaled, not yet
applied: "command.deploy", "command.kill_switch", ...).
"""
import os
import signal

_SPEC = os.environ.get("ORCHESTRATOR_CRASH_AT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_seen = {}


def crash_point(name):
    if not _NAME or name != _NAME:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(_COUNT or 1):
        os.kill(os.getpid(), signal.SIGKILL)
