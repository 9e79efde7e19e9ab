"""The commands: every change to a running engine that is not an inbound frame, as data.

A command is a msgspec Struct, tagged by its `command` field, decoded the same way from the REST API's JSON, the
`ctl` tool and the journal. Each carries an `id` (a retry with the same id is applied once: the first result is
returned again) and its `actor` (who asked: an operator's name, or "engine" for the engine's own policy).
What a command does, its checks and its errors are engine/control.py's; this module is only their shape.
"""
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

CommandId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Actor = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(min_length=1, max_length=64)]
LimitValue = int | float | str

# what an operator may do to a strategy's lifecycle (kernels/lifecycle.py's table decides when)
ACTIONS = ("activate", "pause", "resume", "reduce_only", "halt", "reset", "deactivate", "retire")


class Command(msgspec.Struct, tag_field="command", frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: CommandId | None = None  # None: the engine gives it one (then a retry cannot be recognised)
    actor: Actor = "operator"


class Transition(Command, tag="transition", frozen=True, kw_only=True):
    """Move a strategy through its lifecycle: activate (READY, PAUSED or REDUCING -> ACTIVE, breakers reset),
    pause, resume (PAUSED -> ACTIVE), reduce_only, halt, reset (HALTED -> READY, breakers reset), deactivate
    (-> READY), retire."""
    strategy: Name
    action: Literal[ACTIONS]


class SetLimits(Command, tag="set_limits", frozen=True, kw_only=True):
    """Change limits live, on a strategy (its [sizing], [limits] and [breakers] keys) or an account (its
    max_gross_notional, max_net_notional, daily_loss_limit); validated by the config schema's own types."""
    strategy: Name | None = None
    account: Name | None = None
    values: dict[str, LimitValue]


class KillSwitch(Command, tag="kill_switch", frozen=True, kw_only=True):
    """On: no new order passes (reason kill_switch) in the scope, and every working order in it is canceled
    through the OMS. Off only by this command with on = false."""
    scope: Literal["strategy", "account", "global"]
    name: Name | None = None  # the strategy or account; none for global
    on: bool


class Register(Command, tag="register", frozen=True, kw_only=True):
    """Add the strategy of a file in the config directory's strategies/ (by file name: deploys come only from
    there, never from uploaded code). It starts READY, or ACTIVE when its file says enabled = true."""
    file: Name


class Deploy(Command, tag="deploy", frozen=True, kw_only=True):
    """A new version of a running strategy from its file (or `file`) in strategies/: validated and warmed off the
    hot path, swapped in between batches with the next deploy number. Positions and P&L stay with the name;
    the old version is kept in the deploy history (RETIRED) for a rollback."""
    strategy: Name
    file: Name | None = None


class Rollback(Command, tag="rollback", frozen=True, kw_only=True):
    """Deploy again the version a strategy ran before its current one (or deploy number `to`)."""
    strategy: Name
    to: int | None = None


class Shadow(Command, tag="shadow", frozen=True, kw_only=True):
    """On: run the version in `file` beside the live strategy on the same signals, its orders sized and checked
    against the live position but never sent; the report compares them with the live orders. Off: stop it.
    Promote it with an ordinary deploy."""
    strategy: Name
    on: bool
    file: Name | None = None


class HaltAll(Command, tag="halt_all", frozen=True, kw_only=True):
    """The engine's own policy: every trading strategy is halted (or made reduce-only) because the OMS link is
    gone or the journal cannot be written; they stay so until an operator activates them."""
    policy: Literal["halt", "reduce"]
    reason: str


class CancelUnsent(Command, tag="cancel_unsent", frozen=True, kw_only=True):
    """The engine's own: orders encoded for an OMS link that was gone are canceled in the engine's books."""
    order_ids: list[int]


AnyCommand = Transition | SetLimits | KillSwitch | Register | Deploy | Rollback | Shadow | HaltAll | CancelUnsent


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    ok: bool
    command: str
    detail: dict = {}     # what changed (states before and after, limits set, orders canceled, ...)
    error: str | None = None
    seq: int = 0          # the journal record that holds it (0: not journaled, e.g. refused)
    repeated: bool = False  # a retry of an id already applied: this is the first result


def decode_command(data: bytes | str) -> AnyCommand:
    """A command from JSON; raises msgspec.ValidationError naming the field."""
    return msgspec.json.decode(data, type=AnyCommand)
