"""The strategy lifecycle: one transition table (state x event -> state), used by kernels and control plane.

-1 means the event is illegal in that state: the kernel leaves the state as it is, the control plane refuses
the command with `IllegalTransition` and changes nothing.
"""
import numpy as np

from kernels._jit import helper
from kernels.dtypes import (
    ACTIVE, EVENT_NAMES, EV_ACTIVATE, EV_COOLDOWN, EV_DEACTIVATE, EV_HALT, EV_PAUSE, EV_REDUCE, EV_RESET, EV_RETIRE,
    EV_TRIP_HALT, EV_TRIP_REDUCE, EV_VALIDATE, HALTED, PAUSED, READY, REDUCING, REGISTERED, RETIRED, STATE_NAMES,
)

N_STATES = len(STATE_NAMES)
N_EVENTS = len(EVENT_NAMES)

_RULES = (
    # event          from states                                   -> to
    (EV_VALIDATE,    (REGISTERED,),                                   READY),
    (EV_ACTIVATE,    (READY, PAUSED, REDUCING),                       ACTIVE),
    (EV_PAUSE,       (ACTIVE, REDUCING),                              PAUSED),
    (EV_REDUCE,      (ACTIVE, PAUSED),                                REDUCING),
    (EV_HALT,        (READY, ACTIVE, PAUSED, REDUCING),               HALTED),
    (EV_RESET,       (HALTED,),                                       READY),
    (EV_DEACTIVATE,  (ACTIVE, PAUSED, REDUCING),                      READY),
    (EV_RETIRE,      (REGISTERED, READY, PAUSED, HALTED),             RETIRED),
    (EV_TRIP_HALT,   (ACTIVE, REDUCING),                              HALTED),
    (EV_TRIP_REDUCE, (ACTIVE,),                                       REDUCING),
    (EV_COOLDOWN,    (HALTED, REDUCING),                              ACTIVE),
)


def _table():
    table = np.full((N_STATES, N_EVENTS), -1, np.int8)
    for event, sources, target in _RULES:
        for state in sources:
            table[state, event] = target
    table.setflags(write=False)
    return table


TRANSITIONS = _table()


class IllegalTransition(ValueError):
    """A lifecycle command that the table does not allow in the current state."""

    def __init__(self, state, event):
        allowed = [EVENT_NAMES[e] for e in range(N_EVENTS) if TRANSITIONS[state, e] >= 0]
        super().__init__(f"cannot {EVENT_NAMES[event]} a strategy in state {STATE_NAMES[state]}; "
                         f"allowed there: {', '.join(allowed) or 'nothing'}")
        self.state, self.event = state, event


def next_state(state, event):
    """The state after `event`, or raise IllegalTransition (control plane)."""
    target = int(TRANSITIONS[state, event])
    if target < 0:
        raise IllegalTransition(state, event)
    return target


@helper
def apply_event(transitions, strategies, s, event):
    """Move strategy s by `event` if the table allows it; return True when the state changed."""
    target = transitions[strategies[s]["state"], event]
    if target < 0:
        return False
    strategies[s]["state"] = target
    return True
