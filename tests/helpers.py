"""Test doubles and small helpers shared by the test modules.

`Answer` and `parse_answers` are the tests' one HTTP answer parser, from `tests.http_answers`;
they are offered here too, beside the requests (`post`, `get`) and the `Stack` they are read from.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from ingest.api import SinkView
from ingest.auth import Tokens
from ingest.buffer import Buffer
from ingest.config import Settings
from ingest.http11 import Limits
from ingest.protocol import HttpChannel
from ingest.ratelimit import ClientLimits
from ingest.stats import Stats
from ingest.tap import build_front
from tests.http_answers import Answer as Answer
from tests.http_answers import parse_answers as parse_answers


class MemoryPool:
    """A deterministic thread pool: a job runs only when the test says, in the order it says.

    `run_one(index)` runs the job at `index` among those waiting (0: the
    oldest), so a test can finish the pool's jobs in any order.
    """

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []
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

        self.jobs.append(work)
        return result

    def run_one(self, index: int = 0) -> None:
        self.jobs.pop(index)()

    def run_all(self) -> int:
        count = 0
        while self.jobs:
            self.run_one()
            count += 1
        return count


class Stack:
    """The service's front wired by `ingest.tap.build_front`, on a Clock, a memory pool and no disk.

    `limits` are the HTTP framing limits (their `max_body` is the body
    limit); `storage_problem` and `durable` stand in for the flusher;
    `tokens` and `client_limits` (the per-client rate limits) go to the `Api`; `headroom`
    builds an `ingest.headroom.Headroom` (``--min-free``) on the Stack's clock;
    `inline_bytes` is the parse queue's bound on bodies decoded at once while
    the pool is idle (0 here, so that every body goes through the pool,
    unlike the service's `ingest.pool.INLINE_BYTES`).
    """

    def __init__(
        self,
        inline: bool = False,
        capacity: int = 1000,
        limits: Limits | None = None,
        idle_timeout: float = 60.0,
        header_timeout: float = 10.0,
        max_pipeline: int = 16,
        storage_problem: Callable[[], str | None] = lambda: None,
        durable: Callable[[int], Deferred[None]] | None = None,
        tokens: Tokens | None = None,
        client_limits: ClientLimits | None = None,
        pool: MemoryPool | None = None,
        headroom: Callable[[Clock], Any] | None = None,
        sink: SinkView | None = None,
        inline_bytes: int = 0,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.pool = pool or MemoryPool()
        self.stats = Stats(self.clock.seconds())
        self.buffer = Buffer(capacity)
        framing = limits or Limits()
        settings = Settings(
            threads=0 if inline else 4,
            max_buffer=capacity,
            max_body=framing.max_body,
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
        )
        self.queue, self.api, self.factory = build_front(
            settings,
            self.clock,
            None if inline else self.pool.run,
            self.stats,
            self.buffer,
            storage_problem,
            durable=durable,
            tokens=tokens,
            client_limits=client_limits,
            framing=framing,
            max_pipeline=max_pipeline,
            headroom=None if headroom is None else headroom(self.clock),
            sink=sink,
            inline_bytes=inline_bytes,
        )

    def connect(self) -> tuple[HttpChannel, StringTransport]:
        channel = self.factory.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def ask(self, requests: bytes) -> list[Answer]:
        """Send `requests` on a new connection, let them be answered, and read the answers."""
        channel, transport = self.connect()
        channel.dataReceived(requests)
        self.settle()
        return parse_answers(transport.value())

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
