"""The load generator's CPU a request: ingest-load's treq path against a minimal Twisted HTTP/1.1 client.

    python bench/client_cost.py [--url http://127.0.0.1:8080] [--requests 20000] [--connections 100]

Against a running ingest (start it yourself, pinned to another core), each client in turn sends
`--requests` one-sample JSON POSTs closed loop over `--connections` keep-alive connections, and the
script prints its requests/s and its CPU microseconds a request (`time.process_time`).  It answers one
question: how many cores of ``ingest-load`` (treq) it takes to saturate one core of ingest, and what a
client without treq's and `twisted.web.client`'s layers would cost instead.  The minimal client
writes a request made once and reads answers by their ``Content-Length`` (ingest always sends one);
it is a measurement, not a tool: no chunked answers, no timeouts, no error handling.

One run on the 2-core development VM (shared with other jobs), ingest pinned to cpu0 with defaults,
this script to cpu1, 5,000 requests over 100 connections, the two clients alternated twice::

    treq (ingest-load)       2,323 req/s   376.5 us CPU a request  (87% of one core)
    minimal protocol         7,231 req/s    39.2 us CPU a request  (28% of one core)
    treq (ingest-load)       1,627 req/s   392.3 us CPU a request  (64% of one core)
    minimal protocol         7,777 req/s    37.7 us CPU a request  (29% of one core)

So treq's path takes about three cores of load generator to saturate one core of ingest (7,500
req/s x 0.38 ms), where a minimal protocol takes a third of one.
"""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import react

from ingest.load import LoadOptions, measure

BODY = b'{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'


class MinimalClient(Protocol):
    """Sends `request` again each time the whole answer to the previous one has been read."""

    def __init__(self, request: bytes, budget: list[int], done: Deferred[None]) -> None:
        self.request = request
        self.budget = budget
        self.done = done
        self.buffer = b""
        self.answered = 0

    def connectionMade(self) -> None:
        self.send()

    def send(self) -> None:
        if self.budget[0] <= 0:
            closing: Any = self.transport
            closing.loseConnection()
            return
        self.budget[0] -= 1
        transport: Any = self.transport
        transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 : head.find(b"\r\n", start) if b"\r\n" in head[start:] else None])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.answered += 1
            self.send()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(None)


async def minimal(reactor: Any, host: str, port: int, requests: int, connections: int) -> None:
    request = (
        f"POST /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode("ascii") + BODY
    budget = [requests]
    finished = []
    for _ in range(connections):
        done: Deferred[None] = Deferred()
        finished.append(done)
        factory = ClientFactory.forProtocol(lambda done=done: MinimalClient(request, budget, done))
        reactor.connectTCP(host, port, factory)
    await gatherResults(finished)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    for name in ("treq (ingest-load)", "minimal protocol", "treq (ingest-load)", "minimal protocol"):
        cpu, wall = time.process_time(), time.monotonic()
        if name.startswith("treq"):
            options = LoadOptions(url=args.url, connections=args.connections, requests=args.requests)
            await measure(reactor, options)
        else:
            await minimal(reactor, host, port, args.requests, args.connections)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        print(
            f"{name:20s} {args.requests / wall:9,.0f} req/s  "
            f"{cpu / args.requests * 1e6:6.1f} us CPU a request  ({cpu / wall:.0%} of one core)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main()
