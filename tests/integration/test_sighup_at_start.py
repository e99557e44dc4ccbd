"""
A SIGHUP that reaches a real process after C{twistd netsupervisor} built its
service but before the reactor runs: it used to end the process (status
129); now the reload happens once the reactor runs.

twistd gives no moment to aim at from outside, so the process sends the
signal to itself at that moment, then runs the real reactor.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import os, signal, sys
from twisted.internet import reactor
from supervisor.daemon import Daemon, Options

options = Options()
options.parseOptions(["--config", sys.argv[1], "--admin", "tcp:0:interface=127.0.0.1"])
daemon = Daemon(options, reactor)
service = daemon.makeService()
with open(sys.argv[1], "a") as f:
    f.write('[[connection]]\\nname = "b"\\nendpoint = "tcp:host=127.0.0.1:port=1"\\n')
os.kill(os.getpid(), signal.SIGHUP)
service.startService()

def done():
    print("connections", sorted(daemon.supervisor.connections))
    print("reloads", daemon.supervisor.reloads)
    reactor.stop()

reactor.callLater(0.5, done)
reactor.run()
"""


def test_aHangupBeforeTheReactorRunsIsAReload(tmp_path: Path) -> None:
    config = tmp_path / "netsupervisor.toml"
    config.write_text('[[connection]]\nname = "a"\nendpoint = "tcp:host=127.0.0.1:port=1"\n')
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert "connections ['a', 'b']" in result.stdout
    assert "reloads {'success': 1, 'failure': 0}" in result.stdout
    assert "Traceback" not in result.stderr
