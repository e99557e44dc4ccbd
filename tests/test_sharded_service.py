"""
A sharded Supervisor keeps only the connections its shard owns, and a reload
with another shard count adds and drains only the connections that moved.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq

from supervisor.admin import AdminRoot
from supervisor.metrics import SupervisorMetrics, exposition
from supervisor.shard import Shard, owner
from tests.test_service import Fleet, config, spec

NAMES = [f"n{k}" for k in range(60)]
EVERYONE = config(*(spec(n) for n in NAMES), readyShare=1.0)


def sharded(index: int, count: int) -> Fleet:
    return Fleet(EVERYONE, shard=Shard(index, count))


def test_eachShardKeepsOnlyWhatItOwns() -> None:
    shares = [set(sharded(i, 3).supervisor.connections) for i in range(3)]
    assert set().union(*shares) == set(NAMES)
    assert sum(map(len, shares)) == len(NAMES), "no name on two shards"
    for i, share in enumerate(shares):
        assert share == {n for n in NAMES if owner(n, 3) == i}
        assert share, "60 names over 3 shards leave none empty"


def test_theConfigAndReadinessAreTheShare() -> None:
    fleet = sharded(1, 3)
    supervisor = fleet.supervisor
    mine = sorted(n for n in NAMES if owner(n, 3) == 1)
    assert [c.name for c in supervisor.config.connections] == [n for n in NAMES if n in mine]
    assert supervisor.config.path == EVERYONE.path
    supervisor.startService()
    for name in mine:
        fleet.accept(name)
    answer = supervisor.readiness()
    assert (answer.ready, answer.total, answer.established) == (True, len(mine), len(mine))


def test_theDefaultShardIsEverything() -> None:
    fleet = Fleet(EVERYONE)
    assert fleet.supervisor.shard == Shard(0, 1)
    assert set(fleet.supervisor.connections) == set(NAMES)
    assert fleet.supervisor.config is EVERYONE


def test_growingDrainsOnlyWhatMovedToTheNewShard() -> None:
    fleet = sharded(0, 3)
    supervisor = fleet.supervisor
    supervisor.startService()
    mine = list(supervisor.connections)
    for name in mine:
        fleet.accept(name)
    before = {name: c.since for name, c in supervisor.connections.items()}
    fleet.transitions.clear()

    report = supervisor.reload(EVERYONE, shard=Shard(0, 4))

    moved = sorted(n for n in mine if owner(n, 4) == 3)
    assert moved, "some of shard 0's names go to the new shard 3"
    assert all(owner(n, 4) in (0, 3) for n in mine), "none goes to another old shard"
    assert sorted(report.removed) == moved
    assert report.added == () and report.changed == ()
    assert sorted(report.unchanged) == sorted(set(mine) - set(moved))
    assert supervisor.shard == Shard(0, 4)
    assert {t.connection for t in fleet.transitions} == set(moved)
    assert {(t.from_, t.to, t.reason) for t in fleet.transitions} == {
        ("ESTABLISHED", "CLOSING", "removed")
    }
    for name in report.unchanged:
        c = supervisor.connection(name)
        assert c is not None and c.state == "ESTABLISHED" and c.since == before[name]


def test_theNewShardTakesExactlyWhatMoved() -> None:
    new = sharded(3, 4)
    assert set(new.supervisor.connections) == {n for n in NAMES if owner(n, 4) == 3}
    moved = {n for n in NAMES if owner(n, 3) != owner(n, 4)}
    assert set(new.supervisor.connections) == moved


def test_shrinkingAddsTheLastShardsNamesAndDrainsNothing() -> None:
    fleet = sharded(1, 4)
    supervisor = fleet.supervisor
    supervisor.startService()
    for name in supervisor.connections:
        fleet.accept(name)
    fleet.transitions.clear()

    report = supervisor.reload(EVERYONE, shard=Shard(1, 3))

    gained = sorted(n for n in NAMES if owner(n, 4) == 3 and owner(n, 3) == 1)
    assert gained
    assert sorted(report.added) == gained
    assert report.removed == () and report.changed == ()
    assert {t.connection for t in fleet.transitions} == set(gained)
    assert {t.to for t in fleet.transitions} == {"CONNECTING"}


def test_aReloadWithoutAShardKeepsTheShard() -> None:
    fleet = sharded(2, 3)
    before = set(fleet.supervisor.connections)
    report = fleet.supervisor.reload(EVERYONE)
    assert fleet.supervisor.shard == Shard(2, 3)
    assert report.added == report.removed == ()
    assert set(fleet.supervisor.connections) == before


def samples(metrics: SupervisorMetrics, name: str) -> list[dict[str, str]]:
    text = exposition(metrics).decode()
    return [
        s.labels
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.value == 1
    ]


def test_metricsSayWhichShardAndCoverItsShare() -> None:
    fleet = sharded(2, 3)
    metrics = SupervisorMetrics(fleet.supervisor)
    assert samples(metrics, "netsupervisor_shard_info") == [{"shard": "2", "shards": "3"}]
    shown = {s["connection"] for s in samples(metrics, "netsupervisor_connection_info")}
    assert shown == {n for n in NAMES if owner(n, 3) == 2}
    fleet.supervisor.startService()
    fleet.supervisor.reload(EVERYONE, shard=Shard(2, 4))
    fleet.reactor.advance(10)  # past the drain of what moved
    assert samples(metrics, "netsupervisor_shard_info") == [{"shard": "2", "shards": "4"}]
    shown = {s["connection"] for s in samples(metrics, "netsupervisor_connection_info")}
    assert shown == {n for n in NAMES if owner(n, 4) == 2}


def test_anUnshardedProcessIsShardZeroOfOne() -> None:
    metrics = SupervisorMetrics(Fleet(EVERYONE).supervisor)
    assert samples(metrics, "netsupervisor_shard_info") == [{"shard": "0", "shards": "1"}]


def test_theAdminAPIAnswersForTheShare() -> None:
    fleet = sharded(1, 3)
    fleet.supervisor.startService()
    stub = StubTreq(AdminRoot(fleet.supervisor, SupervisorMetrics(fleet.supervisor)))
    mine = {n for n in NAMES if owner(n, 3) == 1}

    def get(path: str) -> tuple[int, dict[str, list[bytes]], object]:
        d = stub.get("http://shard.test" + path)
        stub.flush()
        response = d.result
        body = stub.content(response)
        stub.flush()
        return response.code, dict(response.headers.getAllRawHeaders()), json.loads(body.result)

    code, headers, connections = get("/connections")
    assert code == 200 and headers[b"Netsupervisor-Shard"] == [b"1/3"]
    assert isinstance(connections, list)
    assert {c["name"] for c in connections} == mine
    code, _, ready = get("/readyz")
    assert isinstance(ready, dict) and ready["total"] == len(mine)
    other = next(n for n in NAMES if n not in mine)
    code, _, answer = get(f"/connections/{other}")
    assert (code, answer) == (404, {"error": f"no connection {other!r}"})
