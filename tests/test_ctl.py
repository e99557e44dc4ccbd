"""
netsupervisor-ctl over treq's in-memory client: the merged status of
several shards (real admin resources of real supervisors on memory
reactors), actions sent to the owning shard, exit codes, and admin
endpoints that are down, stuck, huge or hostile.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionAborted, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from supervisor import ctl
from supervisor.admin import AdminRoot
from supervisor.adminclient import AnswerTooLarge, _BoundedWire, _BoundedWireFactory
from supervisor.shard import Shard, owner
from tests.test_metrics import Fleet, spec

T = TypeVar("T")

TOKEN = "ctl-t0ken"
SHARDS = 3
NAMES = [f"dev-{k}" for k in range(12)]


def result(d: Deferred[T]) -> T:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


class Routed:
    """
    treq's C{request}, routed by URL prefix to one C{StubTreq} per shard; a
    URL without a stub is refused, as a port nobody listens on.
    """

    def __init__(self) -> None:
        self.stubs: dict[str, StubTreq] = {}
        self.asked: list[tuple[str, str]] = []

    def add(self, url: str, resource: Resource) -> None:
        self.stubs[url] = StubTreq(resource)

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred[Any]:
        self.asked.append((method, url))
        for prefix, stub in self.stubs.items():
            if url.startswith(prefix + "/"):
                return stub.request(method, url, **kwargs)  # type: ignore[no-any-return]
        return fail(ConnectionRefusedError())

    def flush(self) -> None:
        for stub in self.stubs.values():
            stub.flush()


class World:
    """
    SHARDS supervisors, each with the share of NAMES its index owns, behind
    their real admin resources.
    """

    def __init__(self, tokenFile: Path, count: int = SHARDS) -> None:
        self.http = Routed()
        self.clock = Clock()
        self.urls = [f"http://shard-{i}.test:9100" for i in range(count)]
        self.fleets: list[Fleet] = []
        for i, url in enumerate(self.urls):
            fleet = Fleet(
                *(spec(n) for n in NAMES), shard=Shard(i, count), token_file=str(tokenFile)
            ).start()
            self.fleets.append(fleet)
            self.http.add(url, AdminRoot(fleet.supervisor, fleet.metrics))

    def establishAll(self, *but: str) -> None:
        for fleet in self.fleets:
            for name in fleet.supervisor.connections:
                if name not in but:
                    fleet.accept(name)

    def fleetOf(self, name: str) -> Fleet:
        return self.fleets[owner(name, len(self.fleets))]

    def run(self, *argv: str) -> tuple[int, str]:
        options = ctl.parseArguments(["--shard-urls", ",".join(self.urls), *argv])
        return self.execute(options)

    def execute(self, options: Any) -> tuple[int, str]:
        out = io.StringIO()
        d = Deferred.fromCoroutine(ctl.execute(options, self.clock, self.http, out))
        self.http.flush()
        return result(d), out.getvalue()


@pytest.fixture
def tokenFile(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def world(tokenFile: Path) -> World:
    return World(tokenFile)


# status ---------------------------------------------------------------------


def test_statusMergesEveryShardUnhealthyFirst(world: World) -> None:
    late = "dev-3"
    world.establishAll(late)
    code, text = world.run("status")
    assert code == ctl.ATTENTION
    lines = text.splitlines()
    assert lines[0].split() == ["SHARD", "URL", "CONNECTIONS", "NOT", "ESTABLISHED", "NOTE"]
    for i, url in enumerate(world.urls):
        assert lines[1 + i].split()[:2] == [str(i), url]
    assert lines[1 + SHARDS] == (
        f"fleet: {SHARDS} shards; {len(NAMES)} connections: 1 CONNECTING, "
        f"{len(NAMES) - 1} ESTABLISHED"
    )
    table = lines[SHARDS + 3 :]
    assert table[0].split() == [
        "SHARD",
        "CONNECTION",
        "STATE",
        "FOR",
        "ATTEMPTS",
        "RTT",
        "LAST",
        "ERROR",
    ]
    rows = [line.split() for line in table[1:]]
    assert sorted(r[1] for r in rows) == sorted(NAMES)
    assert rows[0][:3] == [str(owner(late, SHARDS)), late, "CONNECTING"]
    assert all(r[2] == "ESTABLISHED" for r in rows[1:])
    assert all(r[0] == str(owner(r[1], SHARDS)) for r in rows)


def test_statusIsZeroWhenAllAreEstablished(world: World) -> None:
    world.establishAll()
    code, text = world.run("status", "--unhealthy")
    assert code == ctl.OK
    assert "LAST ERROR" not in text, "--unhealthy shows no row when all are well"


def test_statusAsJSON(world: World) -> None:
    world.establishAll()
    world.fleets[0].advance(7)  # below the heartbeat interval
    code, text = world.run("status", "--json")
    answer = json.loads(text)
    assert code == answer["exit_status"] == ctl.OK
    assert [s["shard"] for s in answer["shards"]] == list(range(SHARDS))
    assert all(s["reachable"] and s["error"] is None for s in answer["shards"])
    assert sum(s["connections"] for s in answer["shards"]) == len(NAMES)
    assert answer["states"] == {"ESTABLISHED": len(NAMES)}
    byName = {c["name"]: c for c in answer["connections"]}
    assert set(byName) == set(NAMES)
    for name, c in byName.items():
        assert c["shard"] == owner(name, SHARDS)
        assert c["state"] == "ESTABLISHED"
    first = next(c for c in answer["connections"] if c["shard"] == 0)
    assert first["seconds_in_state"] == pytest.approx(7, abs=0.6)


def test_aShardThatIsDownIsReportedNotRaised(world: World) -> None:
    world.establishAll()
    del world.http.stubs[world.urls[1]]
    code, text = world.run("status")
    assert code == ctl.UNREACHABLE
    line = text.splitlines()[2]
    assert line.split()[:4] == ["1", world.urls[1], "-", "-"]
    assert line.endswith("unreachable: connection refused")
    assert f"{SHARDS} shards, 1 unreachable" in text
    shown = [n for n in NAMES if f" {n} " in text]
    assert sorted(shown) == sorted(n for n in NAMES if owner(n, SHARDS) != 1)


def test_unreachableWinsOverUnhealthy(world: World) -> None:
    del world.http.stubs[world.urls[2]]
    code, _ = world.run("status")  # nothing ESTABLISHED either
    assert code == ctl.UNREACHABLE


class Hanging(Resource):
    """
    Answers nothing, ever; remembers its requests.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.gone: list[Failure] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        request.notifyFinish().addErrback(self.gone.append)
        return NOT_DONE_YET


def test_aShardThatNeverAnswersIsGivenUpAtTheDeadline(world: World) -> None:
    hanging = Hanging()
    world.http.add(world.urls[0], hanging)
    options = ctl.parseArguments(["--shard-urls", ",".join(world.urls), "--timeout", "2", "status"])
    out = io.StringIO()
    d = Deferred.fromCoroutine(ctl.execute(options, world.clock, world.http, out))
    world.http.flush()
    assert not d.called
    world.clock.advance(1.9)
    assert not d.called
    world.clock.advance(0.2)
    world.http.flush()
    assert result(d) == ctl.UNREACHABLE
    assert "unreachable: no answer within 2 s" in out.getvalue()
    assert len(hanging.gone) == 1, "the stuck request's connection was closed"
    assert world.clock.getDelayedCalls() == []


class Fixed(Resource):
    """
    One fixed answer for every request.
    """

    isLeaf = True

    def __init__(self, body: bytes, headers: dict[bytes, bytes] | None = None, code: int = 200):
        super().__init__()
        self.body = body
        self.headers = headers or {}
        self.code = code

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        for k, v in self.headers.items():
            request.setHeader(k, v)
        return self.body


class Trickle(Resource):
    """
    A body without Content-Length, written chunk by chunk as the test says.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.request: Request | None = None
        self.gone: list[Failure] = []

    def render(self, request: Request) -> object:
        self.request = request
        request.notifyFinish().addErrback(self.gone.append)
        request.write(b"[")
        return NOT_DONE_YET


def badShard(world: World, resource: Resource, *argv: str) -> tuple[int, str]:
    world.http.add(world.urls[0], resource)
    return world.run(*argv, "status")


@pytest.mark.parametrize(
    ("resource", "why"),
    [
        (Fixed(b"x" * 5000), "answer larger than 4,096 bytes"),
        (Fixed(b"not json"), "not a JSON answer (JSONDecodeError)"),
        (Fixed(b"[" * 4000), "not a JSON answer (RecursionError)"),
        (Fixed(b'{"a": 1}'), "not an answer of the admin API (expected a JSON array)"),
        (Fixed(b"[1, 2]"), "not an answer of the admin API (expected connection objects)"),
        (Fixed(b'[{"name": 1}]'), "not an answer of the admin API (a connection without name"),
        (Fixed(b"[]", code=500), "GET /connections answered HTTP 500"),
        (
            Fixed(gzip.compress(b"[" + b" " * 100_000 + b"]"), {b"content-encoding": b"gzip"}),
            "answer larger than 4,096 bytes",
        ),
        (Fixed(b"[]", {b"location": b"http://elsewhere/"}, code=302), "answered HTTP 302"),
    ],
)
def test_aBadAnswerIsReportedAsUnreachable(world: World, resource: Resource, why: str) -> None:
    code, text = badShard(world, resource, "--max-bytes", "4096")
    assert code == ctl.UNREACHABLE
    assert why in text.splitlines()[1]


def test_aTricklingBodyIsCutAtTheLimit(world: World) -> None:
    trickle = Trickle()
    world.http.add(world.urls[0], trickle)
    options = ctl.parseArguments(
        ["--shard-urls", ",".join(world.urls), "--max-bytes", "4096", "status"]
    )
    out = io.StringIO()
    d = Deferred.fromCoroutine(ctl.execute(options, world.clock, world.http, out))
    world.http.flush()
    assert trickle.request is not None
    for _ in range(5):
        trickle.request.write(b" " * 1000)
        world.http.flush()
    assert result(d) == ctl.UNREACHABLE
    assert "answer larger than 4,096 bytes" in out.getvalue()
    assert trickle.gone, "the connection was closed once past the limit"


def test_whatAShardSaysCannotWriteOnTheTerminal(world: World) -> None:
    hostile = [
        {
            "name": "evil",
            "state": "IDLE\x1b[2J",
            "since": 1,
            "attempts": "many",
            "last_error": "boom\x1b]0;owned\x07\nSECOND LINE\r" + "x" * 500,
            "rtt_seconds": True,
            "endpoint": "\x1b[31m",
            "protocol": None,
        }
    ]
    code, text = badShard(world, Fixed(json.dumps(hostile).encode()))
    assert code == ctl.ATTENTION
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    row = next(line for line in text.splitlines() if " evil " in line)
    assert "SECOND LINE" in row, "a newline in a shard's text stays on its row"
    assert len(row) < 250
    assert "\\x1b[2J" in row


def test_aShardOutOfPlaceIsFlagged(world: World) -> None:
    world.http.add(
        world.urls[0], Fixed(b"[]", {b"netsupervisor-shard": b"2/3", b"netsupervisor-time": b"1"})
    )
    world.establishAll()
    code, text = world.run("status")
    assert code == ctl.ATTENTION
    assert "it says it is shard 2/3, not 0/3: give every shard's URL, in shard order" in text


# reconnect and drain --------------------------------------------------------


def test_reconnectGoesToTheOwningShard(world: World, tokenFile: Path) -> None:
    world.establishAll()
    name = "dev-7"
    index = owner(name, SHARDS)
    code, text = world.run("--token-file", str(tokenFile), "reconnect", name)
    assert code == ctl.OK, text
    assert text == (
        f"reconnect {name}: accepted by shard {index} ({world.urls[index]}); now CLOSING\n"
    )
    assert world.http.asked == [("POST", f"{world.urls[index]}/connections/{name}/reconnect")]
    history = world.fleetOf(name).supervisor.connections[name].history
    assert (history[-1].from_, history[-1].to) == ("ESTABLISHED", "CLOSING")


def test_drainAsJSON(world: World, tokenFile: Path) -> None:
    world.establishAll()
    name = "dev-2"
    code, text = world.run("drain", name, "--token-file", str(tokenFile), "--json")
    answer = json.loads(text)
    assert code == answer["exit_status"] == ctl.OK
    assert answer["shard"] == owner(name, SHARDS) and answer["accepted"]
    assert answer["http_status"] == 202 and answer["state"] in ("CLOSING", "CLOSED")
    assert world.fleetOf(name).state(name) in ("CLOSING", "CLOSED")


def test_anUnknownNameSaysWhereItLooked(world: World, tokenFile: Path) -> None:
    code, text = world.run("--token-file", str(tokenFile), "reconnect", "nobody")
    assert code == ctl.ATTENTION
    index = owner("nobody", SHARDS)
    assert text.startswith(f"reconnect nobody: refused by shard {index} ({world.urls[index]}): ")
    assert "no connection 'nobody'" in text
    assert "owns it by the hash over 3 URLs: give every shard's URL, in shard order" in text


def test_aWrongTokenIsRefused(world: World, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    world.establishAll()
    code, text = world.run("--token-file", str(wrong), "drain", "dev-1")
    assert code == ctl.ATTENTION
    assert "invalid bearer token" in text
    assert world.fleetOf("dev-1").state("dev-1") == "ESTABLISHED"


def test_anActionOnAShardThatIsDown(world: World, tokenFile: Path) -> None:
    name = "dev-5"
    del world.http.stubs[world.urls[owner(name, SHARDS)]]
    code, text = world.run("--token-file", str(tokenFile), "drain", name)
    assert code == ctl.UNREACHABLE
    assert text.endswith("unreachable: connection refused\n")


# watch ----------------------------------------------------------------------


def test_watchRefreshesAndStops(world: World) -> None:
    options = ctl.parseArguments(
        ["--shard-urls", ",".join(world.urls), "watch", "--count", "3", "--interval", "5"]
    )
    out = io.StringIO()
    d = Deferred.fromCoroutine(ctl.execute(options, world.clock, world.http, out))
    world.http.flush()
    assert out.getvalue().count("netsupervisor-ctl watch: refresh") == 1
    world.establishAll()
    world.clock.advance(5)
    world.http.flush()
    world.clock.advance(5)
    world.http.flush()
    assert result(d) == ctl.OK, "the last refresh decides"
    text = out.getvalue()
    assert [line for line in text.splitlines() if line.startswith("netsupervisor-ctl")] == [
        f"netsupervisor-ctl watch: refresh {k} of 3, every 5 s" for k in (1, 2, 3)
    ]
    assert "\x1b" not in text, "no screen clearing when the output is not a terminal"
    assert world.clock.getDelayedCalls() == []


def test_watchAsJSONLines(world: World) -> None:
    world.establishAll()
    options = ctl.parseArguments(
        ["--shard-urls", ",".join(world.urls), "--json", "watch", "--count", "2"]
    )
    out = io.StringIO()
    d = Deferred.fromCoroutine(ctl.execute(options, world.clock, world.http, out))
    world.http.flush()
    world.clock.advance(2)
    world.http.flush()
    assert result(d) == ctl.OK
    documents = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(documents) == 2 and all(len(doc["connections"]) == len(NAMES) for doc in documents)


# arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--url", "ftp://x"], "expected an http:// or https:// URL"),
        (["status", "--url", "http://x/?q=1"], "without query, fragment or credentials"),
        (["status", "--url", "http://x:99999"], "expected a valid port"),
        (["--url", "http://a", "--shard-urls", "http://b", "status"], "not both"),
        (["reconnect", "x"], "reconnect needs --token-file"),
        (["drain", "../metrics", "--token-file", "t"], "expected a connection name"),
        (["status", "--timeout", "0"], "expected seconds from 0 to 3600"),
        (["watch", "--count", "-1"], "expected a whole number"),
        (["status", "--max-bytes", "10"], "expected a byte count"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usageErrorsExitTwo(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        ctl.parseArguments(argv)
    assert caught.value.code == ctl.USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"", "one token"),
        (b"two words", "one token"),
        (b"x" * 5000, "longer"),
    ],
)
def test_aTokenFileThatCannotBeUsedIsAUsageError(
    tmp_path: Path, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as caught:
        ctl.parseArguments(["--token-file", str(path), "drain", "a"])
    assert caught.value.code == ctl.USAGE
    assert message in capsys.readouterr().err


def test_optionsMayFollowTheCommand(tokenFile: Path) -> None:
    options = ctl.parseArguments(
        [
            "--json",
            "drain",
            "a",
            "--url",
            "http://h:1/",
            "--url",
            "http://h:2",
            "--token-file",
            str(tokenFile),
        ]
    )
    assert options.json and options.urls == ["http://h:1", "http://h:2"]
    assert options.token == TOKEN
    assert ctl.parseArguments(["status"]).urls == [ctl.DEFAULT_URL]


# the wire bound -------------------------------------------------------------


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lost: list[Failure] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.append(reason)


def test_theWireBoundAbortsPastTheLimitHeadersIncluded() -> None:
    """
    Every byte a connection reads counts, before the body is even reached:
    a server that sends headers forever is cut off.
    """
    inner = Recorder()
    factory = _BoundedWireFactory(Factory_(inner), 100)
    wire = factory.buildProtocol(None)
    transport = StringTransport()
    wire.makeConnection(transport)
    wire.dataReceived(b"HTTP/1.1 200 OK\r\n")
    for _ in range(10):
        wire.dataReceived(b"X-Junk: 1234567890\r\n")
    assert transport.disconnecting
    assert sum(map(len, inner.received)) <= 100
    [reason] = inner.lost
    assert isinstance(reason.value, AnswerTooLarge)
    wire.connectionLost(Failure(ConnectionAborted()))
    assert len(inner.lost) == 1, "the wrapped protocol hears of the end once"


class Factory_:
    """
    A factory of one given protocol.
    """

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self.protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


def test_boundedWireIsUsedByTheRealClient() -> None:
    from twisted.internet.testing import MemoryReactorClock

    from supervisor.adminclient import boundedHTTP

    reactor = MemoryReactorClock()
    http = boundedHTTP(reactor, 1024, 3.0)
    d = http.request("GET", "http://127.0.0.1:9100/connections", unbuffered=True, reactor=reactor)
    [(host, port, factory, timeout, _)] = reactor.tcpClients
    assert (host, port, timeout) == ("127.0.0.1", 9100, 3.0)
    wire = factory.buildProtocol(None)._wrappedProtocol  # inside HostnameEndpoint's wrapper
    assert isinstance(wire, _BoundedWire) and wire.factory.limit == 1024 + 64 * 1024
    d.cancel()
    d.addErrback(lambda f: None)
