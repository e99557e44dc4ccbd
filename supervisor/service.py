"""
L{Supervisor}: every supervised connection of one configuration, as one
Twisted service. Usable on its own (a library) or from C{twistd}.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from supervisor.config import Config
from supervisor.connection import SupervisedConnection
from supervisor.fleet import Fleet
from supervisor.garbage import StartupCollection
from supervisor.interfaces import IProtocolPlugin
from supervisor.operations import Counts, newCounts
from supervisor.plugin import findPlugin
from supervisor.pool import Pool
from supervisor.scheduler import Scheduler
from supervisor.shard import Shard
from supervisor.spec import ConnectionSpec, PoolSpec
from supervisor.states.core import HeartbeatObserver, Observer
from supervisor.states.records import Transition
from supervisor.tls import ClientCreators
from supervisor.transport import clientEndpoints

log = Logger(namespace="netsupervisor.service")

_SHARED_SCHEMES = ("tcp:", "unix:")

EndpointFactory = Callable[
    [ConnectionSpec], IStreamClientEndpoint | Sequence[IStreamClientEndpoint]
]
"""Builds the endpoints of a spec: one per C{spec.targets} entry (a spec with
one endpoint string may have its endpoint alone)."""

START_SLICE = 0.003
"""Seconds that L{Supervisor.startService} spends starting connections
before it returns, and then in each of the reactor's next turns until all
are started: each turn also completes the connects of the turn before, so
that the reactor is never held for long and never idle while some wait."""


@attrs.frozen
class ReloadReport:
    """
    What a reload did, by connection name.

    @ivar retuned: connections whose recovery settings (breaker, flap guard)
        changed and nothing else: applied in place, with no reconnection.
    """

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]
    retuned: tuple[str, ...] = ()


@attrs.frozen
class Readiness:
    """
    The answer of L{Supervisor.readiness}.

    @ivar ready: started, not draining, and enough connections ESTABLISHED.
    @ivar reason: why not, in a few words, or C{""}.
    @ivar established: connections ESTABLISHED.
    @ivar total: connections supervised.
    @ivar notEstablished: the names of the others, sorted.
    """

    ready: bool
    reason: str
    established: int
    total: int
    notEstablished: tuple[str, ...]


class Supervisor(MultiService):
    """
    One L{SupervisedConnection} per configured connection, sharing one
    L{Scheduler}. Starting the service starts every connection; stopping it
    drains them all in parallel (each bounded by its C{drain_timeout}) and
    fires once every one is CLOSED. L{reload} applies a new configuration by
    difference, leaving unchanged connections untouched.

    @ivar config: the configuration now applied: the connections of this
        shard only.
    @ivar shard: which share of the configuration this process keeps (by
        default all of it).
    @ivar draining: set the moment a stop begins; never cleared.
    @ivar reloads: how many reloads succeeded and failed, by result.
    @ivar operationCounts: the endings of the operations submitted to each
        connection and pool, by name; a connection replaced after a reload
        goes on counting in the same place.
    @ivar collection: what holds the garbage collector off start-up and
        freezes it once over, if anything.
    """

    def __init__(
        self,
        config: Config,
        reactor: IReactorTime,
        *,
        plugins: Callable[[str], IProtocolPlugin] = findPlugin,
        endpoints: EndpointFactory | None = None,
        rng: random.Random | None = None,
        shard: Shard | None = None,
        collection: StartupCollection | None = None,
        freezeAfterStart: bool = False,
    ) -> None:
        """
        @param reactor: the clock for every timer, and (unless C{endpoints}
            is given) the reactor endpoints are built on.
        @param freezeAfterStart: hold off full garbage collections while the
            connections are built and start, then freeze what start-up built (see
            L{supervisor.garbage}), as C{twistd netsupervisor} does. Off by
            default: C{gc.freeze()} concerns the whole process, which the
            application embedding a supervisor may manage itself.
        @param collection: what does that (by default, on the C{gc} module);
            given, it is used whatever C{freezeAfterStart} says.
        @param shard: keep only the connections this shard owns
            (L{supervisor.shard}); by default, every connection.
        @param plugins: finds the plugin for a protocol name.
        @param endpoints: builds the endpoints of a spec; by default
            L{supervisor.transport.clientEndpoints} on C{reactor}.
        """
        super().__init__()  # type: ignore[no-untyped-call]
        self.shard = shard if shard is not None else Shard()
        config = self._share(config)
        self.config = config
        self._reactor = reactor
        self._plugins = plugins
        self._endpoints: EndpointFactory = endpoints or self._endpointFromString
        # TLS settings shared by the connections with the same files and server.
        self._tlsCreators = ClientCreators()
        # Endpoints shared by the connections with the same endpoint strings
        # (without TLS): Twisted's client endpoints can connect many times.
        self._endpointCache: dict[tuple[str, ...], Sequence[IStreamClientEndpoint]] = {}
        self._rng = rng if rng is not None else random.Random()
        self.scheduler = Scheduler(reactor)
        self.fleet = Fleet(self.scheduler, self._rng, config.supervisor)
        self.draining = False
        self.reloads = {"success": 0, "failure": 0}
        self._connections: dict[str, SupervisedConnection] = {}
        # Names whose connection is closing to be replaced: the spec to start
        # once it is CLOSED. The closing one stays in _connections till then.
        self._replacements: dict[str, ConnectionSpec] = {}
        # Removed connections, closing, no longer listed.
        self._retiring: set[SupervisedConnection] = set()
        self._observers: tuple[Observer, ...] = ()
        self._heartbeatObservers: tuple[HeartbeatObserver, ...] = ()
        self._stopping: Deferred[None] | None = None
        # The next turn's start of connections not started yet, if any.
        self._starting: IDelayedCall | None = None
        # One bound method, in one tuple, for all connections: not one each.
        self._transitionRelays: tuple[Observer, ...] = (self._transition,)
        self._heartbeatRelays: tuple[HeartbeatObserver, ...] = (self._heartbeat,)
        self.operationCounts: dict[str, Counts] = {}
        self._pools: dict[str, Pool] = {}
        # The pool of each member name.
        self._poolOf: dict[str, Pool] = {}
        self._applyPools(config.pools)
        if collection is None and freezeAfterStart:
            collection = StartupCollection()
        self.collection = collection
        if collection is not None:
            # Building ten thousand connections is start-up too.
            collection.starting()
        for spec in config.connections:
            self._add(spec)

    def _share(self, config: Config) -> Config:
        """
        C{config} with only the connections this shard owns.
        """
        if not self.shard.sharded:
            return config
        owned = tuple(spec for spec in config.connections if self.shard.owns(spec.name))
        return attrs.evolve(config, connections=owned)

    def _endpointFromString(self, spec: ConnectionSpec) -> Sequence[IStreamClientEndpoint]:
        # Shared only where parsing reads no file (a tls: string names
        # certificates, which a reload reads again).
        if spec.tls.enabled:
            return clientEndpoints(self._reactor, spec, self._tlsCreators)
        targets = spec.targets
        endpoints = self._endpointCache.get(targets)
        if endpoints is not None:
            # Only shared targets are cached: the same strings, shared again.
            return endpoints
        endpoints = clientEndpoints(self._reactor, spec, self._tlsCreators)
        if all(t.startswith(_SHARED_SCHEMES) for t in targets):
            self._endpointCache[targets] = endpoints
        return endpoints

    # Reading.

    @property
    def connections(self) -> dict[str, SupervisedConnection]:
        """
        The supervised connections by name (a copy), without those being
        closed after a removal. A connection closing to be replaced (its spec
        changed) is listed until its replacement starts.
        """
        return dict(self._connections)

    def connection(self, name: str) -> SupervisedConnection:
        """
        The connection called C{name} (while a changed connection closes to
        be replaced, the closing one; look it up again afterwards).

        @raise KeyError: no connection of this process has that name.
        """
        return self._connections[name]

    def pool(self, name: str) -> Pool:
        """
        The pool called C{name}: the same object across reloads, until one
        removes it.

        @raise KeyError: the configuration has no such C{[[pool]]}.
        """
        return self._pools[name]

    @property
    def pools(self) -> dict[str, Pool]:
        """
        The pools by name (a copy).
        """
        return dict(self._pools)

    def readiness(self) -> Readiness:
        """
        Whether this process should receive work: started, not draining, and
        at least C{admin.ready_share} of the connections ESTABLISHED.
        """
        connections = self._connections.values()
        total = len(self._connections)
        waiting = tuple(sorted(c.name for c in connections if c.state != "ESTABLISHED"))
        established = total - len(waiting)
        share = self.config.admin.ready_share
        if self.draining:
            reason = "draining"
        elif not self.running:
            reason = "not started"
        elif total and established / total < share:
            reason = f"{established} of {total} established, below ready_share {share:g}"
        else:
            reason = ""
        return Readiness(not reason, reason, established, total, waiting)

    # Observing.

    def addObserver(self, observer: Observer) -> None:
        """
        Call C{observer} with every L{Transition} of every connection,
        present and future.
        """
        self._observers += (observer,)

    def addHeartbeatObserver(self, observer: HeartbeatObserver) -> None:
        """
        Call C{observer(name, rtt)} for every heartbeat of every connection
        (C{rtt} is L{None} for a miss).
        """
        self._heartbeatObservers += (observer,)

    def _transition(self, record: Transition) -> None:
        for observer in self._observers:
            try:
                observer(record)
            except Exception:
                log.failure("transition observer {observer!r} failed", observer=observer)

    def _heartbeat(self, name: str, rtt: float | None) -> None:
        for observer in self._heartbeatObservers:
            try:
                observer(name, rtt)
            except Exception:
                log.failure("heartbeat observer {observer!r} failed", observer=observer)

    # Lifecycle.

    def _add(self, spec: ConnectionSpec) -> SupervisedConnection:
        connection = SupervisedConnection(
            spec,
            self._endpoints(spec),
            self._plugins(spec.protocol),
            self._reactor,
            self.scheduler,
            self._rng,
            self.fleet,
            self._countsOf(spec.name),
            observers=self._transitionRelays,
            heartbeatObservers=self._heartbeatRelays,
        )
        self._connections[spec.name] = connection
        pool = self._poolOf.get(spec.name)
        if pool is not None:
            pool.attach(connection)
        if self.running and not self.draining:
            connection.start()
        return connection

    def _replacing(self, name: str) -> bool:
        # Whether the connection of this name, closing, will be followed by
        # a new one.
        return name in self._replacements and not self.draining

    def _countsOf(self, name: str) -> Counts:
        counts = self.operationCounts.get(name)
        if counts is None:
            counts = self.operationCounts[name] = newCounts()
        return counts

    def _applyPools(self, specs: tuple[PoolSpec, ...]) -> None:
        """
        Make the pools those of C{specs}: new ones are made, changed ones
        retuned, removed ones closed (their members are the connections of
        the configuration, added and removed with them).
        """
        wanted = {spec.name: spec for spec in specs}
        for name in [n for n in self._pools if n not in wanted]:
            self._pools.pop(name).close()
            self.operationCounts.pop(name, None)
        for name, spec in wanted.items():
            pool = self._pools.get(name)
            if pool is None:
                self._pools[name] = Pool(
                    spec, self.scheduler, self._countsOf(name), self._replacing
                )
            elif pool.spec != spec:
                pool.retune(spec)
        self._poolOf = {member: self._pools[spec.name] for spec in specs for member in spec.members}
        for pool in self._pools.values():
            for member in pool.members:
                if self._poolOf.get(member.name) is not pool:
                    pool.detach(member)
        for name, connection in self._connections.items():
            pool = self._poolOf.get(name)
            if pool is not None:
                pool.attach(connection)

    def _close(self, connection: SupervisedConnection) -> None:
        # Called once per connection that a reload closes.
        connection.stop("removed").addCallback(self._closed, connection)

    def _retiringNamed(self, name: str) -> SupervisedConnection | None:
        for connection in self._retiring:
            if connection.name == name:
                return connection
        return None

    def _closed(self, result: None, connection: SupervisedConnection) -> None:
        # The connection is CLOSED: start its replacement, if it has one,
        # in its place (never before, so that one name never has two live
        # connections, and never leaving the name without one).
        self._retiring.discard(connection)
        name = connection.name
        if self._connections.get(name) is not connection:
            return
        spec = self._replacements.pop(name, None)
        if spec is not None and not self.draining:
            self._add(spec)

    def startService(self) -> None:
        """
        Start every connection (and the child services, such as the admin
        site): for L{START_SLICE} seconds at once, the others over the
        reactor's next turns, as many in each.
        """
        super().startService()  # type: ignore[no-untyped-call]
        if self.collection is not None:
            self.addObserver(self.collection.watch(self._connections, self.scheduler))
        self._startSlice(deque(self._connections.values()))
        log.info("supervising {count} connections", count=len(self._connections), log_system="-")

    def _startSlice(self, waiting: deque[SupervisedConnection]) -> None:
        # Start connections for START_SLICE seconds (each is a socket and a
        # connect call); the rest at the reactor's next turn, once it has
        # completed the connects made so far, so that ten thousand neither
        # keep it from reading for a second nor wait on a timer.
        self._starting = None
        seconds = self._reactor.seconds
        enough = seconds() + START_SLICE
        while waiting:
            waiting.popleft().start()
            if seconds() > enough:
                break
        if waiting:
            self._starting = self._reactor.callLater(0, self._startSlice, waiting)

    def stopService(self) -> Deferred[None]:
        """
        Drain: no new attempts; every connection closes in parallel, each
        bounded by its C{drain_timeout}; then the child services stop.
        Calling it again returns the same Deferred.
        """
        if self._stopping is not None:
            return self._stopping
        self.draining = True
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        for pool in self._pools.values():
            pool.close()
        if self.collection is not None:
            self.collection.cancel()
        everyone = list(self._connections.values()) + list(self._retiring)
        log.info("draining {count} connections", count=len(everyone))
        aborted: list[str] = []

        def count(record: Transition) -> None:
            if record.to == "CLOSED" and record.reason == "deadline":
                aborted.append(record.connection)

        self.addObserver(count)
        self._stopping = Deferred.fromCoroutine(self._drain(everyone, aborted))
        return self._stopping

    async def _drain(self, everyone: list[SupervisedConnection], aborted: list[str]) -> None:
        await gatherResults([c.stop("stopped") for c in everyone])
        if aborted:
            log.warn(
                "drain finished: {aborted} of {count} connections aborted at drain_timeout",
                aborted=len(aborted),
                count=len(everyone),
            )
        else:
            log.info("drain finished: {count} connections closed", count=len(everyone))
        # The children (the admin site) answer /readyz with 503 until here.
        await maybeDeferred(MultiService.stopService, self)

    def reload(self, config: Config, *, shard: Shard | None = None) -> ReloadReport:
        """
        Apply C{config} by difference: new names are added (and started, if
        running), removed names are drained and closed, changed ones are
        closed and then started again with their new spec, and unchanged ones
        are left alone (same transport, no transition).

        A name never has two live connections: a changed connection's
        replacement starts once it is CLOSED, and until then the closing one
        is the one its name shows. A reload while a replacement waits only
        changes what will start (or, for a removed name, that nothing will);
        a name removed and added again while its old connection closes gets
        its new connection once the old one is CLOSED.

        @param shard: this process's shard from now on (by default, the one
            it has). Only the connections it owns count as in C{config}: a
            new shard count adds and drains only the connections that moved.
        """
        if shard is not None and shard != self.shard:
            log.info("shard {old} is now shard {new}", old=str(self.shard), new=str(shard))
            self.shard = shard
        config = self._share(config)
        # The endpoints of the new file's connections are shared among them.
        self._endpointCache.clear()
        # What each name runs, or will run once its replacement starts.
        old = {
            name: self._replacements.get(name, connection.spec)
            for name, connection in self._connections.items()
        }
        new = config.byName()
        added = tuple(n for n in new if n not in old)
        removed = tuple(n for n in old if n not in new)
        different = tuple(n for n in new if n in old and new[n] != old[n])
        # Recovery settings (breaker, flap guard) apply in place: the same
        # transport goes on. A name being replaced gets its new spec anyway.
        retuned = tuple(
            n for n in different if n not in self._replacements and new[n].sameConnectionAs(old[n])
        )
        changed = tuple(n for n in different if n not in retuned)
        unchanged = tuple(n for n in new if n in old and new[n] == old[n])
        self.config = config
        self.fleet.budget.retune(config.supervisor)
        self._applyPools(config.pools)
        for name in retuned:
            self._connections[name].retune(new[name])
        for name in removed:
            connection = self._connections.pop(name)
            self._retiring.add(connection)
            self.operationCounts.pop(name, None)
            if self._replacements.pop(name, None) is None:
                self._close(connection)
        for name in changed:
            alreadyClosing = name in self._replacements
            # Recorded first: a connection that is not ESTABLISHED closes at once.
            self._replacements[name] = new[name]
            if not alreadyClosing:
                self._close(self._connections[name])
        for name in added:
            closing = self._retiringNamed(name)
            if closing is None:
                self._add(new[name])
            else:
                self._retiring.discard(closing)
                self._connections[name] = closing
                self._replacements[name] = new[name]
        self.reloads["success"] += 1
        log.info(
            "reloaded {path}: {added} added, {removed} removed, {changed} changed, "
            "{retuned} retuned, {unchanged} unchanged",
            path=config.path,
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            retuned=len(retuned),
            unchanged=len(unchanged),
        )
        return ReloadReport(added, removed, changed, unchanged, retuned)

    def reloadFailed(self) -> None:
        """
        Count a reload whose file was refused (the old config keeps running).
        """
        self.reloads["failure"] += 1
