"""The twistd plugin's options and the wiring of the service.

`makeService` is the only place that touches the global reactor; it builds
every part with its dependencies and returns an `IngestService`, which owns
the start-up and shutdown order.  Shutdown must be ordered (a `MultiService`
would stop its children concurrently): stop listening, answer the requests
in flight and close the connections, then flush, fsync and close storage,
then stop the thread pools.

With ``--workers N`` (N > 1) `makeService` returns an `ingest.workers.Supervisor`
instead, which runs N processes each serving this `IngestService` with
``--worker-id``: see `ingest.workers`.  A worker listens on a socket of its
own with ``SO_REUSEPORT`` rather than through a Twisted endpoint (which cannot
set it), says which it is in ``/stats``, writes its own segment files,
shares its figures with the other workers (`ingest.workers.StatsPublisher`),
and stops by itself when its supervisor is gone.

SIGHUP reloads (`ingest.reload`): `IngestService` is what a reload changes
(`ingest.reload.Live`: tokens, rate limit, timeouts, rejection log rate, retention).

With ``--reuse-port yes`` the single process listens the way a worker does
(its own ``SO_REUSEPORT`` socket), so that a new ingest can start on the port
while this one runs, and take the clients' new connections while this one
drains on SIGTERM (docs/OPERATIONS.md, "Upgrading").  It is not the default:
without it, an ingest started twice on one port fails at once.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from twisted.application.service import IService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ingest import __version__, config, reload, workerstats
from ingest.api import Api, DiskHeadroom, SinkView
from ingest.auth import Tokens
from ingest.buffer import Buffer
from ingest.flusher import Flusher
from ingest.headroom import Headroom
from ingest.http11 import Limits
from ingest.pool import INLINE_BYTES, ParseQueue, RunInPool
from ingest.protocol import ChannelFactory
from ingest.ratelimit import ClientLimits
from ingest.retention import Retention
from ingest.sink import Sink, SinkSettings, StreamMismatch, sink_servers
from ingest.stats import Stats
from ingest.storage import SegmentStore, disk_usage, repair_tails
from ingest.timeouts import Timeouts
from ingest.workers import (
    EXIT_DATA_LOST,
    READY_KEY,
    ParentWatch,
    StatsPublisher,
    Supervisor,
    ignore_interrupts,
    on_hangup,
    reuseport_socket,
)

log = Logger()

MAX_PIPELINE = 16
"""Requests of one connection open at once; past it the connection is not read until one is answered."""

DRAIN_GRACE = 10.0
"""Seconds shutdown waits for connections to take their last answers before aborting them."""

DRAIN_LINGER = 1.0
"""Seconds shutdown leaves an idle keep-alive connection open for the request its client may be sending."""

MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"

SINK_GRACE = 10.0
"""Seconds shutdown gives the sink to have JetStream acknowledge what is on disk (the rest is replayed)."""


def version_text() -> str:
    """``ingest 0.1.0 (Twisted 26.10.0, Python 3.11.7)``: what ``twistd ingest --version`` prints."""
    import platform

    from twisted import __version__ as twisted_version

    return f"ingest {__version__} (Twisted {twisted_version}, Python {platform.python_version()})"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve the ingest HTTP metrics API. Options not given come from the config file "
        "(--config, else ./tap.cfg when present), then from built-in defaults."
    )
    optParameters = [
        [name, None, None, f"{text} [default: {getattr(config.Settings(), name.replace('-', '_'))}]"]
        for name, text in config.OPTIONS
    ] + [
        ["config", None, None, "INI file with an [ingest] section [default: ./tap.cfg if present]"],
        [config.WORKER_ID, None, None, "set by the supervisor of --workers on each worker it starts"],
        [config.GIVEN, None, None, "set by the supervisor of --workers: the options of its command line"],
    ]

    def opt_version(self) -> None:
        """Print ingest's version (and Twisted's and Python's), then exit."""
        print(version_text())
        sys.exit(0)

    def postOptions(self) -> None:
        """Resolve the settings; keep what a reload needs to resolve them again (`ingest.reload.read`)."""
        names = [name for name, _ in config.OPTIONS] + [config.WORKER_ID]
        command_line = {name: self[name] for name in names}
        self.cwd = os.getcwd()
        self.command_line = config.reload_command_line(command_line, self[config.GIVEN])
        """What a reload merges with the config file again: the command line as given."""
        try:
            self.settings = config.load(command_line, self["config"])
            if self.settings.auth_tokens:
                reload.read_tokens(self.settings.auth_tokens)
        except (config.ConfigError, OSError, ValueError) as error:
            raise usage.UsageError(str(error)) from None


def build_front(
    settings: config.Settings,
    clock: IReactorTime,
    run_in_pool: RunInPool | None,
    stats: Stats,
    buffer: Buffer,
    storage_problem: Callable[[], str | None],
    durable: Callable[[int], Deferred[None]] | None = None,
    tokens: Tokens | None = None,
    client_limits: ClientLimits | None = None,
    framing: Limits | None = None,
    max_pipeline: int = MAX_PIPELINE,
    headroom: DiskHeadroom | None = None,
    sink: SinkView | None = None,
    inline_bytes: int = INLINE_BYTES,
    worker_figures: Callable[[], Mapping[int, Mapping[str, Any]]] | None = None,
) -> tuple[ParseQueue, Api, ChannelFactory]:
    """The serving front of `settings`: parse queue, routes and the channel factory, wired to `buffer`.

    The one wiring of these parts, for `IngestService` and for the tests
    (``tests/helpers.Stack``), which pass a `task.Clock`, a memory pool and
    storage doubles.  `run_in_pool` is None to parse inline (``--threads 0``);
    `storage_problem` and `durable` come from the flusher; `framing`
    overrides the HTTP limits (`settings.max_body` is the body limit);
    `inline_bytes` bounds the bodies decoded on the reactor while the pool
    is idle (`ingest.pool.ParseQueue`; 0: none); `worker_figures`, in a
    worker, gives every worker's last figures (`ingest.workers.StatsPublisher`).  The
    buffer's pressure pauses and resumes every channel of the factory.
    """
    parse_queue = ParseQueue(clock, run_in_pool, max(settings.threads, 1), inline_bytes)
    api = Api(
        buffer,
        parse_queue,
        stats,
        clock,
        storage_problem,
        settings.max_body,
        durable=durable,
        tokens=tokens,
        limits=client_limits,
        headroom=headroom,
        sink=sink,
        worker_figures=worker_figures,
    )
    factory = ChannelFactory(
        api,
        stats,
        clock,
        framing or Limits(max_body=settings.max_body),
        Timeouts(idle=settings.idle_timeout, head=settings.header_timeout),
        max_pipeline=max_pipeline,
        max_connections=settings.max_connections,
        max_requests_per_connection=settings.max_requests_per_connection,
        max_connection_age=settings.max_connection_age,
        rejection_log_rate=settings.rejection_log_rate,
    )
    buffer.on_pressure = factory.set_pressure
    return parse_queue, api, factory


class IngestService(Service):
    """Everything, started and stopped in order.

    `parent_pid`, in a worker (``settings.worker_id``), is its supervisor's
    process id: the worker stops when its parent is no longer that process.
    """

    def __init__(self, settings: config.Settings, reactor: Any, parent_pid: int | None = None) -> None:
        self.settings = settings
        self._reactor = reactor
        self.stats = Stats(reactor.seconds(), worker=settings.worker_id)
        self.buffer = Buffer(settings.max_buffer)
        tokens = reload.read_tokens(settings.auth_tokens) if settings.auth_tokens else None
        self.tokens: Tokens | None = tokens
        """The token file's tokens, as read at start (a reload's `ingest.reload.Reloader` has the latest)."""
        limits = ClientLimits(settings.rate_limit, settings.burst) if settings.rate_limit else None
        self.storage = SegmentStore(
            settings.data_dir,
            settings.segment_bytes,
            worker=settings.worker_id,
            segment_age=settings.segment_age,
        )
        self._parse_pool = (
            ThreadPool(settings.threads, settings.threads, "ingest-parse") if settings.threads else None
        )
        self._storage_pool = ThreadPool(1, 1, "ingest-storage")
        run_in_pool = partial(deferToThreadPool, reactor, self._parse_pool) if self._parse_pool else None
        self.sink = (
            Sink(
                reactor,
                settings.data_dir,
                SinkSettings(
                    sink_servers(settings.sink),
                    settings.sink_stream,
                    settings.node_name,
                    settings.sink_replicas,
                ),
                on_confirm=self._confirm if settings.replicated else None,
                on_fatal=self._sink_fatal,
            )
            if settings.sink
            else None
        )
        self.flusher = Flusher(
            self.buffer,
            self.storage,
            reactor,
            partial(deferToThreadPool, reactor, self._storage_pool),
            settings.flush_interval,
            self.stats,
            durable=settings.durable,
            forward=self.sink.forward if self.sink else None,
            replicated=settings.replicated,
            on_rotation=self._rotated,
        )
        self.headroom = Headroom(
            reactor,
            partial(deferToThreadPool, reactor, self._storage_pool),
            partial(disk_usage, settings.data_dir),
            settings.min_free,
        )
        self.retention = (
            Retention(
                reactor,
                partial(deferToThreadPool, reactor, self._storage_pool),
                self.storage,
                self.stats,
                settings.retention,
                settings.retention_bytes,
                forwarded_before=self.sink.forwarded_before if self.sink else None,
                others_live=settings.worker_id is not None,
            )
            if settings.worker_id in (None, 1)
            else None
        )
        """Deletes old segments: the single process, or worker 1 for every worker (`ingest.retention`)."""
        self._stats_publisher: StatsPublisher | None = None
        if settings.worker_id is not None and parent_pid is not None:
            # One view of all workers: each shares its figures with the others (ingest.workerstats).
            directory = workerstats.stats_directory(settings.data_dir, parent_pid)
            self._stats_publisher = StatsPublisher(
                reactor,
                settings.worker_id,
                lambda: self.api.own_snapshot(),
                partial(workerstats.write_snapshot, directory, settings.worker_id),
                partial(workerstats.read_snapshots, directory, settings.worker_id),
            )
        self.parse_queue, self.api, self.factory = build_front(
            settings,
            reactor,
            run_in_pool,
            self.stats,
            self.buffer,
            self._problem if settings.replicated else self.flusher.problem,
            durable=self.flusher.wait_durable if settings.durable or settings.replicated else None,
            tokens=tokens,
            client_limits=limits,
            headroom=self.headroom,
            sink=self.sink,
            worker_figures=None if self._stats_publisher is None else self._stats_publisher.figures,
        )
        self.port: Any = None
        self.data_lost: str | None = None
        """Set by the stop when it may have lost data (`Flusher.lost`): the process then exits failing."""
        self._parent_watch = (
            ParentWatch(reactor, parent_pid, reactor.stop) if parent_pid is not None else None
        )

    def _rotated(self) -> None:
        if self.retention is not None:
            self.retention.check()

    # -- what a reload changes (`ingest.reload.Live`) ---------------------------

    def set_tokens(self, tokens: Tokens | None) -> None:
        self.api.set_tokens(tokens)

    def set_rate_limit(self, rate: float, burst: float) -> None:
        self.api.set_rate_limit(rate, burst)

    def set_timeouts(self, idle: float, head: float) -> None:
        self.factory.set_timeouts(self.factory.timeouts._replace(idle=idle, head=head))

    def set_rejection_log_rate(self, rate: float) -> None:
        self.factory.set_rejection_log_rate(rate)

    def set_retention(self, retention: float, retention_bytes: int) -> None:
        """New retention limits from the next check on; workers other than 1 delete nothing anyway."""
        if self.retention is not None:
            self.retention.configure(retention, retention_bytes)

    def _confirm(self, seq: int) -> None:
        self.flusher.confirm(seq)

    def _problem(self) -> str | None:
        """With --ack replicated, a sink that cannot reach JetStream fails acks as a failing disk does."""
        assert self.sink is not None
        return self.flusher.problem() or self.sink.ack_problem()

    def _sink_fatal(self, message: str) -> None:
        """The stream cannot take our subject: stop (refusing to start, when it is found at start-up)."""
        if self._reactor.running:
            self._reactor.stop()

    def privilegedStartService(self) -> None:
        """Listen now, before twistd drops privileges; a port in use stops start-up with its error."""
        super().privilegedStartService()
        if self.settings.worker_id is not None or self.settings.reuse_port:
            address = config.tcp_address(self.settings.port)
            assert address is not None, "config refuses workers and --reuse-port on other endpoints"
            if self.settings.reuse_port:
                warn_without_migration(read_migrate_req())
            listener = reuseport_socket(address)
            try:
                self._listening(
                    self._reactor.adoptStreamPort(listener.fileno(), listener.family, self.factory)
                )
            finally:
                listener.close()  # the port holds a duplicate
            return
        endpoint = endpoints.serverFromString(self._reactor, self.settings.endpoint)
        listening: Deferred[Any] = endpoint.listen(self.factory)
        failure: list[Failure] = []
        listening.addCallbacks(self._listening, failure.append)
        if failure:
            failure[0].raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port
        self.factory.listening = port
        if self.settings.worker_id is None:
            log.info("ingest listening on {address}", address=port.getHost())
        else:
            log.info(
                "ingest worker {worker} listening on {address}",
                worker=self.settings.worker_id,
                address=port.getHost(),
            )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()
        repaired = self.storage.open()
        cuts = [repaired] if repaired else []
        if self.settings.worker_id is None:
            # The only writer: also repair what workers of an earlier run left torn.
            cuts += repair_tails(self.settings.data_dir, skip={None})
        for path, cut in cuts:
            log.warn("cut a torn last line of {bytes} bytes off {path}", path=path, bytes=cut)
        if self.sink is not None:
            try:
                self.sink.start()
            except StreamMismatch as error:  # refuse to start, with the reason and no traceback
                log.critical("ingest cannot start: {reason}", reason=str(error))
                raise SystemExit(1) from None
        if self._parse_pool:
            self._parse_pool.start()
        self._storage_pool.start()
        self.flusher.start()
        self.headroom.start()
        if self.retention is not None:
            self.retention.start()
        if self._parent_watch is not None:
            self._parent_watch.start()
        if self._stats_publisher is not None:
            self._stats_publisher.start()
        settings = ", ".join(f"{key}={value}" for key, value in vars(self.settings).items())
        log.info(
            "ingest serving on {endpoint}: {settings}",
            endpoint=self.settings.endpoint,
            settings=settings,
            **{READY_KEY: True},  # tells a supervisor this worker serves
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        """Stop listening, drain the connections, flush and close storage, then stop the thread pools.

        A step that fails does not skip the ones after it that keep data or
        let the process end.  A failed drain is logged and storage is still
        flushed and closed (the buffer holds samples already acknowledged);
        the pools are stopped even when that fails too (the failure goes on
        to twistd), since their threads are not daemons: one left running
        keeps the process from exiting.
        """
        super().stopService()
        try:
            try:
                if self._parent_watch is not None:
                    self._parent_watch.stop()
                if self._stats_publisher is not None:
                    self._stats_publisher.stop()
                if self.port is not None:
                    self.factory.listening = None
                    yield self.port.stopListening()
                yield self.factory.drain(DRAIN_GRACE, DRAIN_LINGER)
            except Exception:
                log.failure("stopping the listener or draining the connections failed; flushing all the same")
            self.headroom.stop()
            if self.retention is not None:
                self.retention.stop()
            yield self.flusher.stop()
            self.data_lost = self.flusher.lost
            if self.sink is not None:
                yield self.sink.stop(SINK_GRACE)
        finally:
            if self._parse_pool:
                self._parse_pool.stop()
            self._storage_pool.stop()
        log.info("ingest stopped: {samples} samples written", samples=self.stats.samples_written)


def read_migrate_req(path: str = MIGRATE_REQ) -> str | None:
    """The kernel's ``net.ipv4.tcp_migrate_req`` ("0" or "1"); None when unreadable (before Linux 5.14)."""
    try:
        with open(path, encoding="ascii") as setting:
            return setting.read().strip()
    except OSError:
        return None


def warn_without_migration(migrate_req: str | None) -> None:
    """Warn, with ``--reuse-port``, when the kernel would reset connections queued on a closing listener.

    A restart that hands the port over (docs/OPERATIONS.md, "Upgrading") loses no connection only when
    the kernel moves the connections waiting in the old process's accept queue to the new one as the
    old one closes its socket: ``net.ipv4.tcp_migrate_req = 1``.
    """
    if migrate_req != "1":
        log.warn(
            "--reuse-port: net.ipv4.tcp_migrate_req is {value}, not 1: when this process stops, the "
            "connections waiting in its accept queue are reset rather than handed to the new process",
            value=migrate_req if migrate_req is not None else "unknown",
        )


GC_THRESHOLDS = (20_000, 20, 20)
"""The collector's thresholds in a serving process (Python's defaults: 700, 10, 10)."""


def tune_gc() -> None:
    """Freeze what start-up allocated and collect less often: a shorter latency tail.

    The objects of a request are freed by their reference counts; the
    cyclic collector mostly walks long-lived objects, and its full passes
    are the spikes in the tail.  Measured (BENCHMARKS.md, "Steps taken"), in
    two invocations each: p99 22.3 to 14.6 and 23.9 to 14.0 ms at saturation
    (1 sample, 100 connections), 1.46 to 0.97 and 1.36 to 1.21 ms at 2,253
    evenly paced requests a second; throughput within noise (-4%, +9%).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def exit_if_data_lost(service: IngestService | Supervisor, exit: Callable[[int], object] = os._exit) -> None:
    """After twistd's shutdown: end the process with `EXIT_DATA_LOST` when the stop may have lost data.

    twistd ends a stop by re-raising the signal, and systemd counts a death
    by SIGTERM as a clean stop: a stop that left acknowledged samples
    unwritten (the disk still failing after the stop's retries) would then
    look like any other.  Run as an ``after shutdown`` trigger, once the
    service has stopped and logged; `exit` is `os._exit` because twistd has
    no other way to choose its exit status (what is left of its shutdown:
    removing the pid file, which the next start treats as stale).
    """
    if service.data_lost is None:
        return
    log.critical(
        "exiting with status {status}: the stop may have lost data ({problem})",
        status=EXIT_DATA_LOST,
        problem=service.data_lost,
    )
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    exit(EXIT_DATA_LOST)


def makeService(options: Options) -> IService:
    """The service of `options`: a `Supervisor` of workers with ``--workers`` > 1, else an `IngestService`."""
    from twisted.internet import reactor

    settings = options.settings
    service: IngestService | Supervisor
    hangup: Callable[[], object]
    if settings.workers > 1:
        service = Supervisor(settings, reactor, options["config"], command_line=options.command_line)
        hangup = service.reload_on_hangup(options.cwd)
    else:
        reactor.callWhenRunning(tune_gc)
        if settings.worker_id is not None:
            reactor.callWhenRunning(ignore_interrupts)
        parent_pid = os.getppid() if settings.worker_id is not None else None
        service = IngestService(settings, reactor, parent_pid=parent_pid)
        hangup = reload.Reloader(
            reload.Loaded(settings, service.tokens),
            service,
            options.command_line,
            options["config"],
            options.cwd,
            service.stats.reloads,
        ).reload
    # Now, not once the reactor runs: a worker says it serves (and its supervisor may pass a SIGHUP on)
    # from startService, before twistd runs the reactor.
    on_hangup(reactor, hangup)
    reactor.addSystemEventTrigger("after", "shutdown", exit_if_data_lost, service)
    return service
