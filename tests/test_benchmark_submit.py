"""
The benchmark of C{submit} runs: C{python -m benchmarks --submit} with a
few operations writes sane figures for every way against every peer. No
timing threshold here (see docs/library.md for the figures).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tests.benchmarkrun import runBenchmarks

pytestmark = pytest.mark.integration


def test_aQuickRun(tmp_path: Path) -> None:
    few = ("--ops", "3000", "--rounds", "2", "--batch", "100")
    results, printed = runBenchmarks(tmp_path, "submit.json", "--submit", *few, timeout=120)
    peers = {"peer", "sink"} | ({"redis"} if shutil.which("redis-server") else set())
    assert set(results["peers"]) == peers
    for peer, ways in results["peers"].items():
        expected = {"direct", "submit", "command" if peer == "redis" else "sendLine"}
        if peer != "redis":
            expected |= {"batchDirect", "batchSubmit", "sendLines"}
        assert set(ways) == expected, (peer, ways)
        for name, way in ways.items():
            rate = way["ops_per_second"]
            assert 0 < rate["min"] <= rate["median"] <= rate["max"], (peer, name)
            assert len(way["rounds"]) == 2
            assert way["cpu_us_per_op"]["median"] > 0
            if name not in ("direct", "batchDirect"):
                # A fraction of its direct way's rate; tiny runs on a busy
                # machine may make it anything, so only its being a number
                # is checked.
                assert math.isfinite(way["overhead"]) and way["overhead"] < 1
            batched = name in ("batchDirect", "batchSubmit", "sendLines")
            assert way.get("lines_per_op") == (10 if batched else None), (peer, name)
            against = {"direct": None, "batchDirect": None}.get(name, "direct")
            if name in ("batchSubmit", "sendLines"):
                against = "batchDirect"
            assert way.get("against") == against, (peer, name)
    assert "overhead against direct" in printed
    assert "overhead against batchDirect" in printed and "lines/s" in printed


def test_oneWayOnOnePeer(tmp_path: Path) -> None:
    """
    C{--peers} and C{--ways} measure only what they name (one way, as
    callgrind measures it per operation): no overhead without C{direct}.
    """
    few = ("--ops", "1000", "--rounds", "1", "--peers", "sink", "--ways", "submit")
    results, printed = runBenchmarks(tmp_path, "submit.json", "--submit", *few, timeout=120)
    assert list(results["peers"]) == ["sink"]
    assert list(results["peers"]["sink"]) == ["submit"]
    assert "overhead" not in results["peers"]["sink"]["submit"]
    assert "overhead" not in printed


@pytest.mark.parametrize(
    "given, message",
    [
        (("--lines-per-op", "0"), "--lines-per-op must be at least 1"),
        (("--batch", "-5"), "--batch must be at least 1"),
        (("--ops", "0"), "--ops must be at least 1"),
        (("--batch", "8", "--lines-per-op", "10"), "--lines-per-op must be at most --batch (8)"),
    ],
)
def test_countsOutOfRangeRefused(
    given: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """
    A count that would divide by zero or measure nothing (a turn of the
    reactor that holds no operation) is refused with a usage error, before
    any peer starts.
    """
    from benchmarks.submit import parseArguments

    with pytest.raises(SystemExit) as exited:
        parseArguments(list(given))
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
