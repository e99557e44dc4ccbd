"""
The plugin guide (docs/plugins/writing.md) walks through the example
distribution examples/netsupervisor-memcached by excerpts: each must be in
the file it says it comes from, so that the guide cannot drift from the
code; and the error it shows for a bad option is the loader's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from netsupervisor_memcached import memcachedPlugin

from supervisor.config import ConfigError, parseConfig

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins" / "writing.md"
EXCERPT = re.compile(
    r"^<!-- excerpt: (?P<path>\S+) -->\n\n```\w+\n(?P<code>.*?)^```$", re.DOTALL | re.MULTILINE
)


def excerpts() -> list[tuple[str, str]]:
    return [(m["path"], m["code"]) for m in EXCERPT.finditer(GUIDE.read_text(encoding="utf-8"))]


def test_theGuideHasItsExcerpts() -> None:
    found = excerpts()
    assert len(found) == 9
    assert {path for path, _ in found} == {
        "examples/netsupervisor-memcached/pyproject.toml",
        "examples/netsupervisor-memcached/netsupervisor_memcached/__init__.py",
        "examples/netsupervisor-memcached/tests/test_memcached_plugin.py",
    }


@pytest.mark.parametrize("path, code", excerpts())
def test_anExcerptIsInItsFile(path: str, code: str) -> None:
    assert code in (ROOT / path).read_text(encoding="utf-8")


def test_theGuidesOptionErrorIsTheLoaders() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    [shown] = re.findall(
        r"^netsupervisor: (cache\.toml: connection\[0\]\.options\..*)$", text, re.M
    )
    config = (
        '[[connection]]\nname = "cache-1"\nendpoint = "tcp:host=127.0.0.1:port=11211"\n'
        'protocol = "memcached"\noptions = { min_version = "one.five" }\n'
    )
    with pytest.raises(ConfigError) as refused:
        parseConfig(config, "cache.toml", protocols={"memcached": memcachedPlugin})
    assert str(refused.value) == shown
