"""Request bodies, made from the commands' own Structs so the two cannot drift apart.

A command's body is its fields less `id` (the Idempotency-Key header gives it), `actor` (the token does: a
caller cannot speak for someone else) and the fields the route's path gives (the strategy's name, the
action). A limits body has one optional field per live-settable key (engine/control.py STRATEGY_KEYS,
ACCOUNT_KEYS) with the config schema's own type, so a value out of range is refused at its own path
(`$.max_order_qty`) before the engine checks the limits together. Every body forbids unknown fields.
"""
import msgspec
from msgspec import NODEFAULT, UNSET, UnsetType

from engine.commands import Deploy, KillSwitch, Register, Rollback, Shadow, Transition
from engine.config.schema import Account, Strategy
from engine.control import ACCOUNT_KEYS, STRATEGY_KEYS

SET_BY_API = ("id", "actor")


def body_of(command_type, *, from_path=()):
    """The body Struct of `command_type`: its fields but SET_BY_API and `from_path`."""
    fields = []
    for f in msgspec.structs.fields(command_type):
        if f.name in SET_BY_API or f.name in from_path:
            continue
        if f.default is not NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    return _struct(command_type.__name__ + "Body", fields, command_type.__doc__)


def limits_body(name, owner_fields, doc):
    """A Struct with an optional field per key of `owner_fields` ({key: type}); a key left out is not changed."""
    return _struct(name, [(key, kind | UnsetType, UNSET) for key, kind in owner_fields.items()], doc)


def _struct(name, fields, doc):
    struct = msgspec.defstruct(name, fields, kw_only=True, frozen=True, forbid_unknown_fields=True)
    struct.__doc__ = doc  # the OpenAPI document's description of it
    return struct


def _types(struct_type):
    return {f.name: f.type for f in msgspec.structs.fields(struct_type)}


_SECTIONS = _types(Strategy)  # "sizing" -> Sizing, "limits" -> Limits, "breakers" -> Breakers

TransitionBody = body_of(Transition, from_path=("strategy", "action"))
RegisterBody = body_of(Register)
DeployBody = body_of(Deploy, from_path=("strategy",))
RollbackBody = body_of(Rollback, from_path=("strategy",))
ShadowBody = body_of(Shadow, from_path=("strategy",))
KillSwitchBody = body_of(KillSwitch)
StrategyLimits = limits_body(
    "StrategyLimits", {key: _types(_SECTIONS[section])[key] for key, section in STRATEGY_KEYS.items()},
    "Limits of a strategy to change live, each with its config schema's type (its [sizing], [limits] or "
    "[breakers] key); the keys left out keep their values. The engine then checks them together.")
AccountLimits = limits_body(
    "AccountLimits", {key: _types(Account)[key] for key in ACCOUNT_KEYS},
    "Limits of an account to change live; the keys left out keep their values.")


def set_values(body):
    """{key: value} of the fields a limits body sets."""
    return {key: value for key in body.__struct_fields__ if (value := getattr(body, key)) is not UNSET}
