"""
Two network namespaces joined by a veth pair, for a kernel-level blackhole:
the supervisor runs in one, its peer in the other, and nftables rules in the
peer's namespace drop their packets.

Everything is created here and lives inside the two namespaces: the veth
ends are created directly in them, the addresses (a /30 of 10.0.0.0/8) and
the nftables table exist only there, and nothing in the root namespace (no
address, route, link or rule) is touched. Deleting the namespaces deletes
all of it; L{Namespaces.destroy} does that after killing, by PID, every
process started in them.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.servers import findProgram

ROOT = Path(__file__).resolve().parents[2]
SUPERVISOR_ADDRESS = "10.213.57.1"
PEER_ADDRESS = "10.213.57.2"
PREFIX = 30
TABLE = "netsupervisor_chaos"
COMMAND_TIMEOUT = 10.0


def requireRoot() -> None:
    """
    Skip, saying why, without root; under C{CI=true}, fail instead.
    """
    if os.geteuid() != 0:
        message = "network namespaces and nftables need root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


class CommandFailed(OSError):
    """
    A command exited with an error (an L{OSError}, so that polls retry).
    """


def run(argv: list[str], stdin: str | None = None) -> str:
    """
    Run a short command (bounded); its stdout.

    @raise CommandFailed: it failed, with its stderr.
    """
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class Namespaces:
    """
    The supervisor's namespace and the peer's, their veth pair and
    addresses, and the processes started in them.
    """

    def __init__(self) -> None:
        self.ip = findProgram("ip")
        self.nft = findProgram("nft")
        tag = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.supervisorSide = f"nsvchaos-sup-{tag}"
        self.peerSide = f"nsvchaos-peer-{tag}"
        self.created: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def create(self) -> None:
        """
        Make the namespaces, the veth pair (one end in each), the addresses
        and bring every link up, loopback included.

        @raise CommandFailed: a step failed (whatever was made is still
            listed in C{created} for L{destroy}).
        """
        ip = self.ip
        for name in (self.supervisorSide, self.peerSide):
            try:
                run([ip, "netns", "add", name])
            except CommandFailed as e:
                message = f"cannot create a network namespace here: {e}"
                if os.environ.get("CI", "").lower() == "true" or self.created:
                    raise
                pytest.skip(message)
            self.created.append(name)
        run(
            [
                ip,
                "link",
                "add",
                "nsvc-sup",
                "netns",
                self.supervisorSide,
                "type",
                "veth",
                "peer",
                "name",
                "nsvc-peer",
                "netns",
                self.peerSide,
            ]
        )
        for name, link, address in (
            (self.supervisorSide, "nsvc-sup", SUPERVISOR_ADDRESS),
            (self.peerSide, "nsvc-peer", PEER_ADDRESS),
        ):
            run([ip, "-n", name, "addr", "add", f"{address}/{PREFIX}", "dev", link])
            run([ip, "-n", name, "link", "set", link, "up"])
            run([ip, "-n", name, "link", "set", "lo", "up"])

    def start(self, namespace: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """
        Start C{argv} in C{namespace} (C{ip netns exec} execs it: the PID is
        the program's), its output to C{log}.
        """
        with log.open("wb") as out:
            process = subprocess.Popen(
                [self.ip, "netns", "exec", namespace, *argv],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def python(self, namespace: str, code: str, *args: str) -> str:
        """
        Run a short Python program in C{namespace}; its stdout.
        """
        return run([self.ip, "netns", "exec", namespace, sys.executable, "-c", code, *args])

    def dropPeerPort(self, port: int) -> None:
        """
        In the peer's namespace, drop (and count) every packet to or from
        C{port}.
        """
        rules = f"""
        table inet {TABLE} {{
            chain input {{
                type filter hook input priority 0; policy accept;
                tcp dport {port} counter drop
            }}
            chain output {{
                type filter hook output priority 0; policy accept;
                tcp sport {port} counter drop
            }}
        }}
        """
        run([self.ip, "netns", "exec", self.peerSide, self.nft, "-f", "-"], stdin=rules)

    def droppedPackets(self) -> int:
        """
        How many packets the rules of L{dropPeerPort} dropped so far.
        """
        listing = run(
            [self.ip, "netns", "exec", self.peerSide, self.nft, "list", "table", "inet", TABLE]
        )
        total = 0
        for line in listing.splitlines():
            words = line.split()
            if "counter" in words and "packets" in words:
                total += int(words[words.index("packets") + 1])
        return total

    def undrop(self) -> None:
        """
        Remove the rules of L{dropPeerPort}.
        """
        run([self.ip, "netns", "exec", self.peerSide, self.nft, "delete", "table", "inet", TABLE])

    def destroy(self) -> None:
        """
        Kill (by PID) and reap every process started, then delete the
        namespaces, which deletes the veth pair, addresses and rules.
        """
        errors: list[BaseException] = []
        for process in self.processes:
            try:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(COMMAND_TIMEOUT)
            except BaseException as e:
                errors.append(e)
        for name in reversed(self.created):
            try:
                run([self.ip, "netns", "delete", name])
            except BaseException as e:
                errors.append(e)
        self.created.clear()
        if errors:
            raise errors[0]

    def exists(self) -> set[str]:
        """
        Which of our namespaces the system still lists.
        """
        listed = {line.split()[0] for line in run([self.ip, "netns", "list"]).splitlines() if line}
        return listed & {self.supervisorSide, self.peerSide}
