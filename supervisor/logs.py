"""
Log output for operators: one JSON object per line.

Use with twistd's own C{--logger} option::

    twistd -n --logger=supervisor.logs.jsonLogObserver netsupervisor --config ...

Every transition event carries C{connection}, C{from_}, C{to}, C{reason} and
C{detail}, next to twisted.logger's own keys (C{log_time}, C{log_level},
C{log_namespace}, C{log_format}).
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import ILogObserver, eventAsJSON
from zope.interface import provider


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
