"""
Log output for operators: one JSON object per line.

Use with twistd's own C{--logger} option::

    twistd -n --logger=supervisor.logs.jsonLogObserver netsupervisor --config ...

Every transition event carries C{connection}, C{from_}, C{to}, C{reason} and
C{detail}, next to twisted.logger's own keys (C{log_time}, C{log_level},
C{log_namespace}, C{log_format}).

A process whose observers keep only warnings and worse (a library user's
C{FilteringLogObserver}, say) tells netsupervisor so with L{setLogLevel}:
the info event of every transition is then not built at all, rather than
built and dropped, two per connection at start-up.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import ILogObserver, LogLevel, eventAsJSON
from zope.interface import provider

_LEVELS = tuple(LogLevel.iterconstants())
_kept = frozenset(_LEVELS)


def setLogLevel(level: LogLevel) -> None:
    """
    Build netsupervisor's per-transition log events only when they are at
    C{level} or above (L{LogLevel.warn}: the C{info} event of every
    transition is not built). Say so when the process's observers drop the
    events below C{level} anyway; by default, as under C{twistd}, every
    level is built. Transition observers (C{addObserver}) see every
    transition whatever the level.
    """
    global _kept
    _kept = frozenset(_LEVELS[_LEVELS.index(level) :])


def logsAt(level: LogLevel) -> bool:
    """
    Whether netsupervisor builds its per-transition log events at C{level}
    (L{setLogLevel}).
    """
    return level in _kept


def jsonLogObserver(output: IO[str] | None = None) -> ILogObserver:
    """
    A log observer writing each event as one line of JSON to C{output}
    (standard output by default), for C{twistd --logger}.
    """
    stream = output if output is not None else sys.stdout

    def observe(event: dict[str, object]) -> None:
        flat = dict(event)
        level = getattr(flat.get("log_level"), "name", None)
        if level is not None:
            flat["level"] = level
        # The record is an attrs object; its fields are already flat keys.
        flat.pop("transition", None)
        stream.write(eventAsJSON(flat) + "\n")
        stream.flush()

    observer: ILogObserver = provider(ILogObserver)(observe)
    return observer
