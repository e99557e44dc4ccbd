"""
Real programs the tests need (promtool, and later the peers' servers).
"""

from __future__ import annotations

import os
import shutil

import pytest


def requireProgram(name: str) -> str:
    """
    The path of C{name}. Where it is missing the test skips, saying why, or,
    under C{CI=true}, fails: CI must run every test.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/install-peers installs it, as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
