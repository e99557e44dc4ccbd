"""
The status page at C{/} in a real headless Chromium, on a real
C{twistd -n netsupervisor} with real peers: it shows the right states, follows
a killed peer without a reload, shows the circuit breaker that a failing peer
opens and what holds its connection, shows markup from a label and from a
peer's error text as text, and says when the admin API stops answering.

A screenshot is kept in C{test-artifacts/status-page.png}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.browser import Browser, pngSize
from tests.integration.conftest import ROOT
from tests.integration.daemon import HOST, Daemon, Process, Processes, freePort, poll, stoppedAtEnd
from tests.programs import requireProgram

pytestmark = pytest.mark.integration

MARKUP_LABEL = '<img src=x onerror="document.title=\'pwned\'"> <b>bold</b> & "quoted"'
MARKUP_ERROR = "<script>document.title='pwned'</script><i>italic</i> & more"
TITLE = "netsupervisor status"
SCREENSHOT = ROOT / "test-artifacts" / "status-page.png"

# A peer that answers the redis plugin's first handshake command with an error reply
# holding markup, then hangs up: the connection's last_error ends up as
# "handshake: CLIENT failed: ERR <script>..." (CLIENT SETNAME comes first).
ERROR_PEER = f"""
import socket, sys
server = socket.create_server(("{HOST}", int(sys.argv[1])))
print("listening on {HOST}:" + sys.argv[1], flush=True)
while True:
    connection, _ = server.accept()
    connection.settimeout(2)
    try:
        connection.recv(4096)
        connection.sendall(b"-ERR " + {MARKUP_ERROR.encode()!r} + b"\\r\\n")
    except OSError:
        pass
    finally:
        connection.close()
"""

ROWS = """
return Array.from(document.querySelectorAll("#rows tr")).map(
  (tr) => [tr.querySelector(".conn-name").textContent,
           tr.querySelector(".state .badge").textContent]);
"""

HELD = """
return Object.fromEntries(Array.from(document.querySelectorAll("#rows tr")).map(
  (tr) => [tr.querySelector(".conn-name").textContent,
           tr.querySelector(".state .held")?.textContent ?? null]));
"""

BREAKERS = """
return {
  counts: Array.from(document.querySelectorAll("#breakers .legend-item")).map(
    (li) => li.textContent),
  targets: Array.from(document.querySelectorAll("#breakers .target")).map((li) => ({
    state: li.querySelector(".badge").textContent,
    target: li.querySelector(".target-name").textContent,
    held: li.querySelector(".target-held").textContent,
  })),
  total: document.querySelector("#breakers .total").textContent,
};
"""

ROW_TEXT = """
const row = Array.from(document.querySelectorAll("#rows tr")).find(
  (tr) => tr.querySelector(".conn-name").textContent === arguments[0]);
return row ? {
  labels: row.querySelector(".labels").textContent,
  error: row.querySelector(".error").textContent,
  timeline: row.querySelector(".transitions").textContent,
  chips: row.querySelectorAll(".timeline .chip").length,
} : null;
"""

INJECTED = """
return {
  elements: document.querySelectorAll(
    "#connections img, #connections b, #connections i, #connections script").length,
  scripts: document.scripts.length,
  title: document.title,
  marker: window.__notReloaded === true,
};
"""

FILTER = """
const filter = document.getElementById("filter");
filter.value = arguments[0];
filter.dispatchEvent(new Event("input"));
"""

HTML_SINK = """
try {
  document.createElement("div").innerHTML = "<b>x</b>";
  return "allowed";
} catch (e) {
  return e.name;
}
"""

LARGE_FLEET = """
const states = ["ESTABLISHED", "ESTABLISHED", "IDLE", "CONNECTING", "CLOSING", "CLOSED"];
const fleet = Array.from({ length: 600 }, (_, i) => ({
  name: "n-" + i, endpoint: "tcp:host=10.0.0.1:port=" + i, protocol: "line",
  state: states[i % 6], since: 999935, attempts: 1, consecutive_failures: 0,
  last_error: null, rtt_seconds: 0.001, backoff_delay_seconds: 0,
  held: states[i % 6] === "IDLE" ? "breaker" : null, breaker: "open", labels: {},
  transitions: [{ time: 999935, from: "IDLE", to: states[i % 6], reason: "ready" }],
}));
const open = Array.from({ length: 30 }, (_, i) => ({
  target: "n-" + i, scope: "connection", state: "open", members: 1, held: 1,
}));
const body = JSON.stringify(fleet);
const breakers = JSON.stringify({ closed: 570, open: 30, half_open: 0, not_closed: open });
window.fetch = async (url) => new Response(String(url).startsWith("breakers") ? breakers : body, {
  headers: { "Content-Type": "application/json", "Netsupervisor-Time": "1000000" },
});
"""

FIRST_AGE = """
return document.querySelector("#rows tr .age").textContent;
"""

PAGE_STATUS = """
const banner = document.getElementById("banner");
return {
  banner: banner.hidden ? null : banner.textContent,
  refreshed: document.getElementById("refreshed").textContent,
  shown: document.getElementById("shown").textContent,
  summary: Array.from(document.querySelectorAll("#summary li")).map((li) => li.textContent),
  width: window.innerWidth * window.devicePixelRatio,
  height: window.innerHeight * window.devicePixelRatio,
};
"""


LAPTOP = (1280, 800)

# Thirty rows with everything long that can be: names, endpoints, errors,
# labels, and five transitions with the longest reasons and ages.
WIDE_FLEET = """
const now = 1000000;
const states = ["IDLE", "CONNECTING", "CLOSING", "CLOSED", "ESTABLISHED"];
const fleet = Array.from({ length: 30 }, (_, i) => ({
  name: "payments-cache-primary-" + i + ".eu-west-1.example",
  endpoint: "tcp:host=payments-cache-primary-" + i + ".eu-west-1.internal.example.com:port=6379",
  protocol: "redis", state: states[i % 5], since: now - 90061, attempts: 123456,
  consecutive_failures: 12345, rtt_seconds: 1.234, backoff_delay_seconds: 119.9,
  queue_depth: 1000000,
  last_error: "handshake: CLIENT failed: ERR " + "x".repeat(300),
  labels: {
    group: "payments-cache-primary", region: "eu-west-1", tier: "primary-" + "y".repeat(60),
  },
  transitions: [
    { time: now - 90061, from: "IDLE", to: "CONNECTING", reason: "release" },
    { time: now - 86400, from: "CONNECTING", to: "ESTABLISHED", reason: "ready" },
    { time: now - 7200, from: "ESTABLISHED", to: "CLOSING", reason: "rotation" },
    { time: now - 3600, from: "CLOSING", to: "IDLE", reason: "rotation" },
    { time: now - 65, from: "CONNECTING", to: "IDLE", reason: "handshake" },
  ],
}));
const body = JSON.stringify(fleet);
window.fetch = async () => new Response(body, {
  headers: { "Content-Type": "application/json", "Netsupervisor-Time": String(now) },
});
"""

FIT = """
const page = document.documentElement;
const shown = (element) => {
  const box = element.getBoundingClientRect();
  const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
  return box.width > 0 && box.left >= 0 && box.right <= window.innerWidth &&
    box.top >= 0 && box.bottom <= window.innerHeight && hit !== null && element.contains(hit);
};
const rows = Array.from(document.querySelectorAll("#rows tr"));
const newest = rows.map((tr) => Array.from(tr.querySelectorAll(".timeline .chip")).pop());
window.scrollTo(10000, 0);
const scrolledX = window.scrollX;
window.scrollTo(0, 0);
return {
  viewport: [window.innerWidth, window.innerHeight],
  pageWidth: page.scrollWidth,
  scrolledX: scrolledX,
  rightmost: Math.max(...rows.map((tr) => tr.getBoundingClientRect().right)),
  newestOfFirstRow: newest[0].textContent,
  newestOfFirstRowShown: shown(newest[0]),
  newestWithinWidth: newest.every(
    (chip) => chip.getBoundingClientRect().right <= window.innerWidth),
};
"""

STICKY_HEAD = """
window.scrollTo(0, 600);
const top = document.querySelector("#connections thead").getBoundingClientRect().top;
const scrolled = window.scrollY;
window.scrollTo(0, 0);
return [scrolled, top];
"""


def toml(value: str) -> str:
    """
    C{value} as a TOML basic string (JSON's escapes are TOML's).
    """
    return json.dumps(value)


def configText(lines: dict[str, int], errorPort: int) -> str:
    labels = {
        "web-1": {"group": "web"},
        "web-2": {"group": "web"},
        "db-1": {"group": "db", "note": MARKUP_LABEL},
    }
    entries = []
    for name, port in lines.items():
        table = ", ".join(f"{k} = {toml(v)}" for k, v in labels[name].items())
        entries.append(
            f'[[connection]]\nname = "{name}"\nendpoint = "tcp:host={HOST}:port={port}"\n'
            f"labels = {{ {table} }}\n"
        )
        if name == "web-2":
            # Slow retries, so that the loss stays among the last transitions shown.
            entries[-1] += 'backoff = { initial = 2.0, max = 4.0, jitter = "none" }\n'

    entries.append(
        f'[[connection]]\nname = "cache-1"\nendpoint = "tcp:host={HOST}:port={errorPort}"\n'
        f'protocol = "redis"\nlabels = {{ group = "cache" }}\n'
        # Probes further apart than its retries: between two probes it waits
        # held by the breaker (not by its own backoff), long enough for the
        # page, refreshed every 2 s, to show it.
        "breaker = { probe_interval = 3.0, probe_max = 3.0 }\n"
    )
    return (
        '[defaults]\nprotocol = "line"\ndrain_timeout = 1.0\nconnect_timeout = 2.0\n'
        'backoff = { initial = 0.2, max = 1.0, jitter = "full", reset_after = 1.0 }\n'
        "heartbeat = { interval = 0.5, timeout = 0.5, misses = 2 }\n\n" + "\n".join(entries)
    )


class World(Processes):
    """
    Line peers, a peer that answers errors, the daemon and the browser.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.browser: Browser | None = None

    def errorPeer(self) -> tuple[Process, int]:
        port = freePort()
        script = self.directory / "error_peer.py"
        script.write_text(ERROR_PEER)
        process = self.started(
            Process(
                [sys.executable, str(script), str(port)],
                self.directory,
                self.directory / "error.log",
            )
        )
        poll(lambda: "listening on" in process.output(), 15, "the error peer to listen")
        return process, port

    def daemon(self, config: str) -> Daemon:
        path = self.directory / "netsupervisor.toml"
        path.write_text(config)
        return self.started(Daemon(path, self.directory))

    def open(self) -> Browser:
        self.browser = Browser(self.directory)
        return self.browser

    def stop(self) -> None:
        try:
            if self.browser is not None:
                self.browser.stop()
        finally:
            super().stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    requireProgram("chromium")
    requireProgram("chromedriver")
    yield from stoppedAtEnd(World(tmp_path))


def statesShown(browser: Browser) -> dict[str, str]:
    return dict(browser.run(ROWS))


def test_theStatusPageFollowsTheConnections(world: World) -> None:
    peers = {name: world.peer() for name in ("web-1", "web-2", "db-1")}
    _, errorPort = world.errorPeer()
    daemon = world.daemon(configText({n: p.port for n, p in peers.items()}, errorPort))
    poll(
        lambda: (
            all(daemon.connections()[n]["state"] == "ESTABLISHED" for n in peers)
            and "<script>" in (daemon.connections()["cache-1"]["last_error"] or "")
        ),
        15,
        "the line connections ESTABLISHED and the markup error in cache-1's last_error",
    )

    browser = world.open()
    browser.open(f"http://{HOST}:{daemon.admin}/")
    shown = poll(lambda: statesShown(browser), 15, "the table to be drawn")
    assert set(shown) == {"web-1", "web-2", "db-1", "cache-1"}
    poll(
        lambda: all(statesShown(browser)[n] == "ESTABLISHED" for n in peers),
        10,
        "the page to show the line connections ESTABLISHED",
    )
    assert statesShown(browser)["cache-1"] in ("IDLE", "CONNECTING")
    browser.run("window.__notReloaded = true;")

    # cache-1's peer fails every handshake: after breaker.failures (5) of
    # them its breaker opens, and the page says so, with the target and how
    # many of its members are held; cache-1 waits IDLE, held by it.
    cacheTarget = f"tcp:host={HOST}:port={errorPort}"

    def cacheBreaker() -> dict[str, Any] | None:
        shown = browser.run(BREAKERS)
        targets = [t for t in shown["targets"] if t["target"] == cacheTarget]
        return shown if targets else None

    breakers = poll(cacheBreaker, 15, "the page to show cache-1's breaker open")
    [target] = [t for t in breakers["targets"] if t["target"] == cacheTarget]
    assert target["state"] in ("open", "half-open")
    assert target["held"] in ("0 of 1 held", "1 of 1 held")
    assert breakers["total"] == "4breakers", breakers  # one per peer
    assert len(breakers["counts"]) == 3 and breakers["counts"][0].endswith("closed")
    poll(
        lambda: browser.run(HELD)["cache-1"] == "breaker",
        15,
        "the page to show cache-1 held by its breaker",
    )
    assert daemon.connections()["cache-1"]["breaker"] in ("open", "half_open")
    assert {browser.run(HELD)[n] for n in peers} == {None}

    # Markup in a label value and in an error text shows as text.
    db = browser.run(ROW_TEXT, "db-1")
    assert "note=" + MARKUP_LABEL in db["labels"]
    cache = browser.run(ROW_TEXT, "cache-1")
    assert "handshake: CLIENT failed: ERR " + MARKUP_ERROR in cache["error"]
    injected = browser.run(INJECTED)
    assert injected == {"elements": 0, "scripts": 1, "title": TITLE, "marker": True}

    # A killed peer: its row changes without a reload, the others stay.
    peers["web-2"].stop()  # SIGKILL, by PID
    poll(
        lambda: statesShown(browser)["web-2"] in ("IDLE", "CONNECTING"),
        15,
        "the page to show web-2 lost",
    )
    states = statesShown(browser)
    assert [states[n] for n in ("web-1", "db-1")] == ["ESTABLISHED", "ESTABLISHED"]
    # Unhealthy first, then configuration order.
    assert list(states)[2:] == ["web-1", "db-1"]
    assert set(list(states)[:2]) == {"web-2", "cache-1"}
    web2 = browser.run(ROW_TEXT, "web-2")
    assert "lost" in web2["timeline"]
    assert 2 <= web2["chips"] <= 5
    assert "ESTABLISHED" in web2["timeline"] and "IDLE" in web2["timeline"]
    assert browser.run(INJECTED) == injected
    status = browser.run(PAGE_STATUS)
    assert status["banner"] is None
    assert status["refreshed"].startswith("refreshed ")
    assert status["shown"] == "showing 4 of 4"
    assert status["summary"][0] == "4connections"
    assert "2ESTABLISHED" in status["summary"]

    # The filter narrows the table at once, without a fetch.
    browser.run(FILTER, "group=db")
    assert statesShown(browser) == {"db-1": "ESTABLISHED"}
    assert browser.run(PAGE_STATUS)["shown"] == "showing 1 of 1 matching (4 in all)"
    browser.run(FILTER, "")
    assert len(statesShown(browser)) == 4
    # Nothing was refused by the Content-Security-Policy, no script failed.
    assert browser.consoleErrors() == []
    # And the policy's Trusted Types forbid parsing a string as HTML in this page.
    assert browser.run(HTML_SINK) == "TypeError"

    png = browser.screenshot()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(png)
    assert pngSize(png) == (status["width"], status["height"])

    # The admin API stops answering: the page says so instead of freezing.
    daemon.signal(signal.SIGKILL)
    daemon.wait(10)
    banner = poll(lambda: browser.run(PAGE_STATUS)["banner"], 10, "the unreachable banner")
    assert banner.startswith("Admin API unreachable since ")
    assert "the table shows data from" in banner
    assert statesShown(browser)["web-1"] == "ESTABLISHED"  # the last data, kept
    assert browser.run(INJECTED)["marker"] is True

    # A large fleet, served by a stand-in for fetch, on a server whose clock
    # is far from the browser's: the page recovers, caps the rows, puts the
    # unhealthy ones first and measures time in state on the server's clock.
    browser.run(LARGE_FLEET)
    poll(lambda: browser.run(PAGE_STATUS)["banner"] is None, 10, "the page to recover")
    status = browser.run(PAGE_STATUS)
    assert status["shown"] == "showing 500 of 600 — refine the filter to see the others"
    assert status["summary"] == [
        "600connections",
        "100IDLE",
        "100CONNECTING",
        "200ESTABLISHED",
        "100CLOSING",
        "100CLOSED",
    ]
    rows = browser.run(ROWS)
    assert len(rows) == 500
    assert [state for _, state in rows[::100]] == [
        "IDLE",
        "CONNECTING",
        "CLOSING",
        "CLOSED",
        "ESTABLISHED",
    ]
    assert rows[:2] == [["n-2", "IDLE"], ["n-8", "IDLE"]]
    assert browser.run(FIRST_AGE) in ("1m 05s", "1m 06s", "1m 07s")
    assert browser.run(HELD)["n-2"] == "breaker"
    breakers = browser.run(BREAKERS)
    assert breakers["total"] == "600breakers"
    assert breakers["counts"] == ["570closed", "30open", "0half-open"]
    assert len(breakers["targets"]) == 20  # the first twenty; /breakers has the rest
    assert browser.run(INJECTED)["marker"] is True

    # Every Chromium process is in chromedriver's process group, and none
    # survives the end of the browser.
    chromium = browser.processes()
    assert len(chromium) >= 2
    groups = set()
    for pid in chromium:
        with contextlib.suppress(ProcessLookupError):  # a helper that just ended
            groups.add(os.getpgid(pid))
    assert groups == {browser.pgid}
    browser.stop()
    assert browser.popen.returncode is not None
    assert browser.processes() == []


def assertFits(browser: Browser) -> dict[str, object]:
    """
    At a laptop's 1280 x 800, the page does not scroll sideways, every row
    ends within the viewport, and the newest transition of every row is
    within its width; the first row's is on screen, not covered.
    """
    fit: dict[str, object] = browser.run(FIT)
    assert fit["viewport"] == list(LAPTOP)
    assert fit["pageWidth"] == LAPTOP[0], fit
    assert fit["scrolledX"] == 0, fit
    assert fit["rightmost"] <= LAPTOP[0], fit  # type: ignore[operator]
    assert fit["newestOfFirstRowShown"] is True, fit
    assert fit["newestWithinWidth"] is True, fit
    return fit


def test_theStatusPageFitsALaptopScreen(world: World) -> None:
    """
    At 1280 x 800 every column is shown without scrolling sideways, and the
    newest transition of each row is visible: with the daemon's own data
    after a lost peer, and with every value as long as it gets.
    """
    peer = world.peer()
    lines = {"web-1": peer.port, "web-2": peer.port, "db-1": peer.port}
    _, errorPort = world.errorPeer()
    daemon = world.daemon(configText(lines, errorPort))
    poll(
        lambda: all(daemon.connections()[n]["state"] == "ESTABLISHED" for n in lines),
        15,
        "the line connections ESTABLISHED",
    )
    peer.stop()  # SIGKILL, by PID: each line connection gets a few transitions
    poll(
        lambda: all(len(daemon.json(f"/connections/{n}")["transitions"]) >= 3 for n in lines),
        15,
        "three transitions for each line connection",
    )

    browser = world.open()
    browser.viewport(*LAPTOP)
    browser.open(f"http://{HOST}:{daemon.admin}/")
    poll(lambda: len(statesShown(browser)) == 4, 15, "the table to be drawn")
    fit = assertFits(browser)
    first = browser.run(ROWS)[0][0]
    newest = daemon.json(f"/connections/{first}")["transitions"][-1]
    assert str(fit["newestOfFirstRow"]).startswith(newest["to"] + newest["reason"])

    browser.run(WIDE_FLEET)
    poll(
        lambda: len(statesShown(browser)) == 30 and browser.run(PAGE_STATUS)["banner"] is None,
        10,
        "the wide fleet to be drawn",
    )
    fit = assertFits(browser)
    assert fit["newestOfFirstRow"] == "IDLEhandshake1m 05s ago"
    # The head stays in view as the table scrolls.
    scrolled, top = browser.run(STICKY_HEAD)
    assert scrolled == 600
    assert top == 0
    assert browser.consoleErrors() == []
