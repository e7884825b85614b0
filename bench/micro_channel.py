"""Micro-benchmark: CPU per request in ingest's own code, without the network.

Feeds wrk-shaped POST requests into one `HttpChannel` on a StringTransport
(parse inline, no pool, no reactor, no syscalls) and reports microseconds
per request, median of several rounds.  What it leaves out (epoll, socket
reads and writes, the reactor's dispatch, the thread hop) is measured by
`bench/compare.py`; this isolates the part our code decides.

    python bench/micro_channel.py [--requests 20000] [--rounds 7] [--batch 1] [--pipelined]
"""

from __future__ import annotations

import argparse
import statistics
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from ingest.api import Api
from ingest.buffer import Buffer
from ingest.http11 import Limits
from ingest.pool import ParseQueue
from ingest.protocol import ChannelFactory
from ingest.stats import Stats

ONE = b'{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'


def request(batch: int) -> bytes:
    body = ONE if batch == 1 else b"[" + b",".join([ONE] * batch) + b"]"
    return (
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: %d\r\n"
        b"Content-Type: application/json\r\n\r\n%s" % (len(body), body)
    )


def one_round(requests: int, batch: int, pipelined: bool) -> float:
    clock = Clock()
    stats = Stats(0)
    buffer = Buffer(10**9)
    api = Api(buffer, ParseQueue(clock, None, 1), stats, clock, lambda: None)
    factory = ChannelFactory(api, stats, clock, Limits())
    channel = factory.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    data = request(batch)
    started = time.perf_counter()
    if pipelined:
        chunk = data * 10
        for _ in range(requests // 10):
            channel.dataReceived(chunk)
            transport.clear()
            if buffer.depth > 100_000:
                buffer.take()
                buffer.commit()
    else:
        for _ in range(requests):
            channel.dataReceived(data)
            transport.clear()
            if buffer.depth > 100_000:
                buffer.take()
                buffer.commit()
    elapsed = time.perf_counter() - started
    assert stats.responses[("/metrics", 202)] == requests, stats.responses
    return elapsed / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pipelined", action="store_true")
    args = parser.parse_args()
    rounds = [one_round(args.requests, args.batch, args.pipelined) for _ in range(args.rounds)]
    print(
        f"us per request: median {statistics.median(rounds):.2f}  (rounds: "
        + ", ".join(f"{r:.2f}" for r in rounds)
        + ")"
    )


if __name__ == "__main__":
    main()
