"""Test doubles and small helpers shared by the test modules.

`Answer` and `parse_answers` are the tests' one HTTP answer parser, from `tests.http_answers`;
they are offered here too, beside the requests (`post`, `get`) and the `Stack` they are read from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted._threads import createMemoryWorker
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from ingest.api import Api
from ingest.auth import Tokens
from ingest.buffer import Buffer
from ingest.http11 import Limits
from ingest.pool import ParseQueue
from ingest.protocol import ChannelFactory, HttpChannel
from ingest.ratelimit import ClientLimits
from ingest.stats import Stats
from tests.http_answers import Answer as Answer
from tests.http_answers import parse_answers as parse_answers


class MemoryPool:
    """A deterministic thread pool: work runs only when the test calls `run_all`."""

    def __init__(self) -> None:
        self._worker, self._perform = createMemoryWorker()
        self.submitted = 0

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.submitted += 1
        result: Deferred[Any] = Deferred()

        def work() -> None:
            try:
                value = function(*args)
            except BaseException:
                result.errback(Failure())
            else:
                result.callback(value)

        self._worker.do(work)
        return result

    def run_all(self) -> int:
        count = 0
        while self._perform():
            count += 1
        return count


class Stack:
    """The service's parts wired as in `ingest.tap`, on a Clock, a memory pool and no disk.

    `limits` are the HTTP framing limits; `tokens` and `client_limits` (the
    per-client rate limits) go to the `Api`.
    """

    def __init__(
        self,
        inline: bool = False,
        capacity: int = 1000,
        limits: Limits | None = None,
        idle_timeout: float = 60.0,
        max_pipeline: int = 16,
        storage_problem: Callable[[], str | None] = lambda: None,
        durable: Callable[[int], Deferred[None]] | None = None,
        tokens: Tokens | None = None,
        client_limits: ClientLimits | None = None,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.pool = MemoryPool()
        self.stats = Stats(self.clock.seconds())
        self.buffer = Buffer(capacity)
        self.queue = ParseQueue(self.clock, None if inline else self.pool.run, max_jobs=4)
        self.api = Api(
            self.buffer,
            self.queue,
            self.stats,
            self.clock,
            storage_problem,
            durable=durable,
            tokens=tokens,
            limits=client_limits,
        )
        self.factory = ChannelFactory(
            self.api, self.stats, self.clock, limits or Limits(), idle_timeout, max_pipeline
        )

    def connect(self) -> tuple[HttpChannel, StringTransport]:
        channel = self.factory.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def settle(self) -> None:
        """Let the parse queue dispatch and the pool run until nothing is left."""
        while True:
            self.clock.advance(0)
            if not self.pool.run_all():
                return

    def stored(self) -> list[dict[str, Any]]:
        """The samples in the buffer, decoded."""
        batch = self.buffer.take()
        if batch is None:
            return []
        self.buffer.commit()
        return [json.loads(line) for line in batch.data.splitlines()]


def post(path: bytes, body: bytes, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    """A POST request with Content-Length."""
    lines = [b"POST " + path + b" " + version, b"Host: test", b"Content-Length: %d" % len(body), *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path: bytes, *headers: bytes, method: bytes = b"GET", version: bytes = b"HTTP/1.1") -> bytes:
    lines = [method + b" " + path + b" " + version, b"Host: test", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


SAMPLE = b'{"name":"cpu.load","value":0.42,"tags":{"host":"a"}}'
