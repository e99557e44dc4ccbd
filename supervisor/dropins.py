"""
Where drop-in plugin modules are found: the C{plugins/} folders on
C{sys.path}. Kept apart from L{supervisor.plugin}, which imports the
C{plugins} package: that package extends its own path from here at import.
"""

from __future__ import annotations

import os
import sys

__all__ = ["dropInFolders"]


def dropInFolders(package: str = "plugins") -> list[str]:
    """
    The drop-in folders of the plugin package C{package}: C{<entry>/<package>}
    for each entry of C{sys.path} where that folder exists without an
    C{__init__.py}, each folder once, in C{sys.path}'s order.

    The working directory counts only where it was named: C{python -c} and
    C{python -m} put it on C{sys.path} by themselves, as does an empty
    component of C{PYTHONPATH}, and which plugins run must not depend on the
    directory the process was started in. It is searched when
    C{PYTHONPATH} names it, or when it is the directory of the script run.
    """
    unnamed = _unnamedWorkingDirectory()
    folders: list[str] = []
    seen: set[str] = set()
    for entry in sys.path:
        if not isinstance(entry, str) or os.path.abspath(entry) in unnamed:
            continue
        folder = os.path.abspath(os.path.join(entry, package))
        if not os.path.isdir(folder) or os.path.exists(os.path.join(folder, "__init__.py")):
            continue
        real = os.path.realpath(folder)
        if real not in seen:
            seen.add(real)
            folders.append(folder)
    return folders


def _unnamedWorkingDirectory() -> set[str]:
    """
    The working directory, unless C{PYTHONPATH} names it or the script being
    run lives there: then it is nothing (an empty set).
    """
    cwd = os.getcwd()
    named = {
        os.path.abspath(part) for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part
    }
    script = sys.argv[0] if sys.argv else ""
    if script not in ("", "-c") and os.path.isfile(script):
        named.add(os.path.dirname(os.path.abspath(script)))
    return set() if cwd in named else {cwd}
