"""
The connection state machine: L{machine} declares it; one module per state
holds that state's data and entry behaviour.
"""

from supervisor.states.records import STATES, Cause, State, Transition

__all__ = ["STATES", "Cause", "State", "Transition"]
