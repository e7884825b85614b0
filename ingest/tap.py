"""The twistd plugin's options and the wiring of the service.

`makeService` is the only place that touches the global reactor; it builds
every part with its dependencies and returns an `IngestService`, which owns
the start-up and shutdown order.  Shutdown must be ordered (a `MultiService`
would stop its children concurrently): stop listening, answer the requests
in flight and close the connections, then flush, fsync and close storage,
then stop the thread pools.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ingest import config
from ingest.api import Api
from ingest.auth import Tokens
from ingest.buffer import Buffer
from ingest.flusher import Flusher
from ingest.http11 import Limits
from ingest.pool import ParseQueue
from ingest.protocol import ChannelFactory
from ingest.ratelimit import ClientLimits
from ingest.stats import Stats
from ingest.storage import SegmentStore

log = Logger()

DRAIN_GRACE = 10.0
"""Seconds shutdown waits for connections to take their last answers before aborting them."""


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve the ingest HTTP metrics API. Options not given come from the config file "
        "(--config, else ./tap.cfg when present), then from built-in defaults."
    )
    optParameters = [
        [name, None, None, f"{text} [default: {getattr(config.Settings(), name.replace('-', '_'))}]"]
        for name, text in config.OPTIONS
    ] + [["config", None, None, "INI file with an [ingest] section [default: ./tap.cfg if present]"]]

    def postOptions(self) -> None:
        try:
            self.settings = config.load({name: self[name] for name, _ in config.OPTIONS}, self["config"])
            if self.settings.auth_tokens:
                with open(self.settings.auth_tokens, encoding="utf-8") as tokens_file:
                    Tokens.from_text(tokens_file.read())
        except (config.ConfigError, OSError, ValueError) as error:
            raise usage.UsageError(str(error)) from None


class IngestService(Service):
    """Everything, started and stopped in order."""

    def __init__(self, settings: config.Settings, reactor: Any) -> None:
        self.settings = settings
        self._reactor = reactor
        self.stats = Stats(reactor.seconds())
        self.buffer = Buffer(settings.max_buffer)
        tokens = None
        if settings.auth_tokens:
            with open(settings.auth_tokens, encoding="utf-8") as tokens_file:
                tokens = Tokens.from_text(tokens_file.read())
        limits = ClientLimits(settings.rate_limit, settings.burst) if settings.rate_limit else None
        self.storage = SegmentStore(settings.data_dir, settings.segment_bytes)
        self._parse_pool = (
            ThreadPool(settings.threads, settings.threads, "ingest-parse") if settings.threads else None
        )
        self._storage_pool = ThreadPool(1, 1, "ingest-storage")
        run_in_pool = partial(deferToThreadPool, reactor, self._parse_pool) if self._parse_pool else None
        self.parse_queue = ParseQueue(reactor, run_in_pool, max_jobs=max(settings.threads, 1))
        self.flusher = Flusher(
            self.buffer,
            self.storage,
            reactor,
            partial(deferToThreadPool, reactor, self._storage_pool),
            settings.flush_interval,
            self.stats,
            durable=settings.durable,
        )
        self.api = Api(
            self.buffer,
            self.parse_queue,
            self.stats,
            reactor,
            self.flusher.problem,
            settings.max_body,
            durable=self.flusher.wait_durable if settings.durable else None,
            tokens=tokens,
            limits=limits,
        )
        self.factory = ChannelFactory(
            self.api,
            self.stats,
            reactor,
            Limits(max_body=settings.max_body),
            settings.idle_timeout,
            header_timeout=settings.header_timeout,
            max_connections=settings.max_connections,
        )
        self.buffer.on_pressure = self.factory.set_pressure
        self.port: Any = None

    def privilegedStartService(self) -> None:
        """Listen now, before twistd drops privileges; a port in use stops start-up with its error."""
        super().privilegedStartService()
        endpoint = endpoints.serverFromString(self._reactor, self.settings.endpoint)
        listening: Deferred[Any] = endpoint.listen(self.factory)
        failure: list[Failure] = []
        listening.addCallbacks(self._listening, failure.append)
        if failure:
            failure[0].raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port
        self.factory.listening = port
        log.info("ingest listening on {address}", address=port.getHost())

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()
        repaired = self.storage.open()
        if repaired:
            log.warn("cut a torn last line of {bytes} bytes off {path}", path=repaired[0], bytes=repaired[1])
        if self._parse_pool:
            self._parse_pool.start()
        self._storage_pool.start()
        self.flusher.start()
        settings = ", ".join(f"{key}={value}" for key, value in vars(self.settings).items())
        log.info(
            "ingest serving on {endpoint}: {settings}", endpoint=self.settings.endpoint, settings=settings
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            self.factory.listening = None
            yield self.port.stopListening()
        yield self.factory.drain(DRAIN_GRACE)
        yield self.flusher.stop()
        if self._parse_pool:
            self._parse_pool.stop()
        self._storage_pool.stop()
        log.info("ingest stopped: {samples} samples written", samples=self.stats.samples_written)


def makeService(options: Options) -> IngestService:
    from twisted.internet import reactor

    return IngestService(options.settings, reactor)
