"""
C{netsupervisor-ctl}: the whole fleet at a glance, and the admin actions
sent to the right shard.

    netsupervisor-ctl [--url URL ... | --shard-urls URL,URL,...] [--token-file PATH]
                      [--json] [--timeout SECONDS] [--max-bytes N]
                      {status,watch,reconnect,drain} ...

The URLs are the shards' admin URLs in shard order (the URL of shard C{I}
at place C{I}); C{reconnect} and C{drain} go to the shard that owns the
name by the daemons' own hash. Exit codes, for scripts: L{OK} (0),
L{ATTENTION} (1: a connection not ESTABLISHED, an action refused, a shard
out of place), L{USAGE} (2), L{UNREACHABLE} (3: a shard gave no usable
answer; it wins over 1). The reference is C{docs/deploy.md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn, TextIO
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from supervisor.adminclient import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    HTTP,
    ActionResult,
    AdminClient,
    FleetStatus,
    Row,
    act,
    fleetStatus,
)
from supervisor.options import escape
from supervisor.spec import NAME_PATTERN

__all__ = ["ATTENTION", "OK", "UNREACHABLE", "USAGE", "execute", "parseArguments", "run"]

OK: Final = 0
"""Every shard answered and all is well (every connection ESTABLISHED, the action accepted)."""
ATTENTION: Final = 1
"""Every shard answered, but a connection is not ESTABLISHED, or the action was refused."""
USAGE: Final = 2
"""Bad arguments, or a token file that cannot be used."""
UNREACHABLE: Final = 3
"""A shard gave no usable answer (refused, timed out, too large, not the admin API)."""

DEFAULT_URL: Final = "http://127.0.0.1:9100"
MAX_TOKEN_BYTES: Final = 4096
ERROR_WIDTH: Final = 60
CLEAR: Final = "\x1b[H\x1b[2J"


def _url(text: str) -> str:
    parts = urlsplit(text)
    if not text.isascii() or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL of an admin port, got {text!r}"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise argparse.ArgumentTypeError(
            f"expected a URL without query, fragment or credentials, got {text!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a valid port in {text!r}") from None
    return text.rstrip("/")


def _urlList(text: str) -> list[str]:
    return [_url(u.strip()) for u in text.split(",") if u.strip()]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 3600, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _bytes(text: str) -> int:
    if not text.isdigit() or not 1024 <= int(text) <= 1 << 30:
        raise argparse.ArgumentTypeError(f"expected a byte count from 1024 to 2**30, got {text!r}")
    return int(text)


def _name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a connection name ([A-Za-z0-9_.:-]+), got {escape(text)!r}"
        )
    return text


def _addCommon(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """
    The options every command takes. They may come before or after the
    command: on a subcommand's parser (C{suppress}) they default to
    nothing, so that they do not reset what came before the command.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    where = parser.add_argument_group("shards")
    where.add_argument(
        "--url",
        action="append",
        type=_url,
        dest="urls",
        default=default(None),
        metavar="URL",
        help=f"a shard's admin URL; repeat it for every shard, in shard order "
        f"(default: {DEFAULT_URL})",
    )
    where.add_argument(
        "--shard-urls",
        type=_urlList,
        default=default(None),
        metavar="URL,URL,...",
        help="every shard's admin URL, comma-separated, in shard order",
    )
    parser.add_argument(
        "--token-file",
        default=default(None),
        metavar="PATH",
        help="the file holding the admin token (for reconnect and drain)",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON, not tables"
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=default(DEFAULT_TIMEOUT),
        metavar="SECONDS",
        help=f"the most one exchange with a shard may take (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-bytes",
        type=_bytes,
        default=default(DEFAULT_MAX_BYTES),
        metavar="N",
        help=f"the largest answer read from a shard (default {DEFAULT_MAX_BYTES})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netsupervisor-ctl",
        description="Look at and act on the connections of one or many netsupervisor "
        "processes (the shards of one config) through their admin APIs.",
        epilog="exit status: 0 all well; 1 a connection not ESTABLISHED or an action "
        "refused; 2 usage; 3 a shard unreachable (wins over 1)",
    )
    _addCommon(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = argparse.ArgumentParser(add_help=False)
    _addCommon(shared, suppress=True)
    status = commands.add_parser(
        "status", parents=[shared], help="one table of every shard's connections, unhealthy first"
    )
    status.add_argument("--unhealthy", action="store_true", help="only connections not ESTABLISHED")
    watch = commands.add_parser("watch", parents=[shared], help="status, refreshed")
    watch.add_argument("--unhealthy", action="store_true", help="only connections not ESTABLISHED")
    watch.add_argument(
        "--interval", type=_positive, default=2.0, metavar="SECONDS", help="default 2"
    )
    watch.add_argument(
        "--count", type=_count, default=0, metavar="N", help="stop after N refreshes (0: never)"
    )
    for action in ("reconnect", "drain"):
        command = commands.add_parser(
            action, parents=[shared], help=f"{action} one connection, on the shard that owns it"
        )
        command.add_argument("name", type=_name, metavar="NAME")
    return parser


def _readToken(parser: argparse.ArgumentParser, path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        parser.error(f"--token-file {path}: cannot read: {e.strerror or type(e).__name__}")
    if len(data) > MAX_TOKEN_BYTES:
        parser.error(f"--token-file {path}: longer than {MAX_TOKEN_BYTES} bytes")
    token = data.strip()
    if not token or any(b <= 0x20 or b >= 0x7F for b in token):
        parser.error(f"--token-file {path}: expected one token of printable ASCII")
    return token.decode("ascii")


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line, checked; the token read from C{--token-file}.

    @raise SystemExit: with L{USAGE} for bad arguments (after saying why
        on stderr), or 0 after C{--help}.
    """
    parser = _parser()
    options = parser.parse_args(argv)
    urls = (options.urls or []) + (options.shard_urls or [])
    if options.urls and options.shard_urls:
        parser.error("give --url or --shard-urls, not both")
    if len(urls) > 1024:
        parser.error("at most 1024 shards")
    options.urls = urls or [DEFAULT_URL]
    options.token = None
    if options.command in ("reconnect", "drain"):
        if not options.token_file:
            parser.error(f"{options.command} needs --token-file")
        options.token = _readToken(parser, options.token_file)
    return options


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _rtt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _shown(text: str | None, width: int = ERROR_WIDTH) -> str:
    """
    A string from a shard, safe for a terminal: one line, no control
    character, at most C{width} characters.
    """
    if not text:
        return "-"
    text = escape(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]


def _counts(states: dict[str, int]) -> str:
    return ", ".join(f"{n} {_shown(state, 20)}" for state, n in states.items()) or "none"


def statusCode(status: FleetStatus) -> int:
    """
    The exit status of C{status}: L{UNREACHABLE}, L{ATTENTION} or L{OK}.
    """
    if not status.allReachable:
        return UNREACHABLE
    return OK if status.healthy else ATTENTION


def renderStatus(status: FleetStatus, unhealthyOnly: bool = False) -> str:
    """
    The fleet as text: one line per shard, a total, then one line per
    connection, unhealthy first.
    """
    shardRows = []
    for s in status.shards:
        if s.reachable:
            note = s.warning or "-"
            notEstablished = sum(1 for r in s.rows if not r.healthy)
            shardRows.append(
                [str(s.index), _shown(s.url), str(len(s.rows)), str(notEstablished), note]
            )
        else:
            shardRows.append(
                [str(s.index), _shown(s.url), "-", "-", "unreachable: " + _shown(s.error, 200)]
            )
    lines = _table(["SHARD", "URL", "CONNECTIONS", "NOT ESTABLISHED", "NOTE"], shardRows)
    down = sum(1 for s in status.shards if not s.reachable)
    reach = f", {down} unreachable" if down else ""
    lines.append(
        f"fleet: {len(status.shards)} shards{reach}; {len(status.rows)} connections: "
        f"{_counts(status.states())}"
    )
    shown: list[Row] = [r for r in status.rows if not (unhealthyOnly and r.healthy)]
    if shown:
        lines.append("")
        lines += _table(
            ["SHARD", "CONNECTION", "STATE", "FOR", "ATTEMPTS", "RTT", "LAST ERROR"],
            [
                [
                    str(r.shard),
                    _shown(r.name, 100),
                    _shown(r.state, 20),
                    _duration(r.age),
                    "-" if r.attempts is None else str(r.attempts),
                    _rtt(r.rtt),
                    _shown(r.lastError),
                ]
                for r in shown
            ],
        )
    return "\n".join(lines) + "\n"


def statusJSON(status: FleetStatus, unhealthyOnly: bool = False) -> dict[str, Any]:
    """
    The fleet as C{--json} prints it.
    """
    return {
        "exit_status": statusCode(status),
        "shards": [s.asJSON() for s in status.shards],
        "states": status.states(),
        "connections": [r.asJSON() for r in status.rows if not (unhealthyOnly and r.healthy)],
    }


def actionCode(result: ActionResult) -> int:
    """
    The exit status of C{reconnect} or C{drain}.
    """
    if result.code is None or result.code >= 500:
        return UNREACHABLE
    return OK if result.accepted else ATTENTION


def renderAction(result: ActionResult, count: int) -> str:
    where = f"shard {result.shard} ({_shown(result.url)})"
    if result.accepted:
        return f"{result.action} {result.name}: accepted by {where}; now {_shown(result.state)}\n"
    if result.code is None:
        return f"{result.action} {result.name}: {where} unreachable: {_shown(result.message)}\n"
    text = f"{result.action} {result.name}: refused by {where}: {_shown(result.message)}"
    if result.code == 404:
        text += (
            f" ({where} owns it by the hash over {count} URL{'s' if count > 1 else ''}: "
            "give every shard's URL, in shard order)"
        )
    return text + "\n"


async def execute(options: argparse.Namespace, clock: IReactorTime, http: HTTP, out: TextIO) -> int:
    """
    Run the command in C{options} (from L{parseArguments}).

    @param clock: times deadlines and C{watch}'s refreshes.
    @param http: treq's client (L{supervisor.adminclient.boundedHTTP}, or a
        C{StubTreq} in tests).
    @return: the exit status.
    """
    client = AdminClient(http, clock, timeout=options.timeout, maxBytes=options.max_bytes)
    urls: list[str] = options.urls
    if options.command in ("reconnect", "drain"):
        result = await act(client, urls, options.name, options.command, options.token)
        if options.json:
            out.write(json.dumps({"exit_status": actionCode(result), **result.asJSON()}) + "\n")
        else:
            out.write(renderAction(result, len(urls)))
        return actionCode(result)
    if options.command == "status":
        status = await fleetStatus(client, urls)
        if options.json:
            out.write(json.dumps(statusJSON(status, options.unhealthy)) + "\n")
        else:
            out.write(renderStatus(status, options.unhealthy))
        return statusCode(status)
    return await _watch(options, clock, client, urls, out)


async def _watch(
    options: argparse.Namespace,
    clock: IReactorTime,
    client: AdminClient,
    urls: list[str],
    out: TextIO,
) -> int:
    refresh = 0
    clear = out.isatty() and not options.json
    while True:
        refresh += 1
        status = await fleetStatus(client, urls)
        if options.json:
            out.write(json.dumps(statusJSON(status, options.unhealthy)) + "\n")
        else:
            of = f" of {options.count}" if options.count else ""
            out.write(
                (CLEAR if clear else "")
                + f"netsupervisor-ctl watch: refresh {refresh}{of}, every {options.interval:g} s\n"
                + renderStatus(status, options.unhealthy)
                + ("" if clear else "\n")
            )
        out.flush()
        if options.count and refresh >= options.count:
            return statusCode(status)
        await deferLater(clock, options.interval)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """
    The console script: parse, run on the reactor, exit with the status.
    """
    from twisted.internet.task import react

    from supervisor.adminclient import boundedHTTP

    options = parseArguments(sys.argv[1:] if argv is None else argv)

    def main(reactor: Any) -> Deferred[None]:
        http = boundedHTTP(reactor, options.max_bytes, options.timeout)

        async def go() -> None:
            code = await execute(options, reactor, http, sys.stdout)
            if code:
                raise SystemExit(code)

        return Deferred.fromCoroutine(go())

    react(main)
