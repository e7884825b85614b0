"""An evenly paced open-loop load: `--rate` requests a second, one every 1/rate seconds.

h2load's ``--rps`` gives each connection its own timer and the timers fire
in step, so a fixed rate arrives as bursts of one request per connection;
what it measures is then mostly the time to drain a burst.  This driver
sends request i at ``start + i / rate`` on connection ``i % connections``
(after `--warmup` seconds at the same rate that are not recorded: the
service starts its pool threads and grows its memory then)
(pipelined behind an answer still owed, as HTTP/1.1 allows), so the load
is as smooth as the seed's description of it, and times each answer from
the moment its request was due (no coordinated omission).  It writes one
line per answered request, as h2load's ``--log-file`` does: due time (us),
status, latency (us); then a fourth field, the latency from the moment the
request was actually written.  The event loop's timers have millisecond
granularity, so the driver sleeps to within 2 ms of a request's due time
and spins the rest: sends are on time to a few microseconds, at the price
of the driver's core (cpu1, its own).

    python bench/paced.py --port 8080 --rate 2253 --connections 100 --seconds 10 --log out.log

Pure asyncio and raw sockets, to cost the load generator little per
request.  `bench/fixed_rate.py --driver paced` runs it against contenders.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque

BODY = b'{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'


def request(port: int) -> bytes:
    return (
        b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(BODY), BODY)
    )


class Client(asyncio.Protocol):
    """One keep-alive connection: sends what it is given, times the answers in order."""

    def __init__(
        self, results: list[tuple[float, int, float, float]], clock: asyncio.AbstractEventLoop
    ) -> None:
        self._results = results
        self._clock = clock
        self._due: deque[tuple[float, float]] = deque()
        self._buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, due: float) -> None:
        assert self.transport is not None
        self._due.append((due, self._clock.time()))
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            status = int(head[9:12])
            due, sent = self._due.popleft()
            now = self._clock.time()
            self._results.append((due, status, now - due, now - sent))


async def drive(args: argparse.Namespace) -> list[tuple[float, int, float, float]]:
    loop = asyncio.get_running_loop()
    results: list[tuple[float, int, float, float]] = []
    clients = []
    for _ in range(args.connections):
        _, client = await loop.create_connection(lambda: Client(results, loop), "127.0.0.1", args.port)
        clients.append(client)
    data = request(args.port)
    total = int(args.rate * (args.warmup + args.seconds))
    start = loop.time() + 0.1
    recorded = start + args.warmup
    sent = 0
    while sent < total:
        due = start + sent / args.rate
        delay = due - loop.time()
        if delay > 0.002:
            await asyncio.sleep(delay - 0.002)
        else:
            await asyncio.sleep(0)  # read the answers that came meanwhile
        now = loop.time()
        while sent < total and start + sent / args.rate <= now:
            clients[sent % len(clients)].send(data, start + sent / args.rate)
            sent += 1
    deadline = loop.time() + 10
    while len(results) < total and loop.time() < deadline:
        await asyncio.sleep(0.01)
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return [result for result in results if result[0] >= recorded]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2253)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10, help="seconds measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds at the rate first, not recorded")
    parser.add_argument("--log", required=True, help="where to write one line per answered request")
    args = parser.parse_args()
    results = asyncio.run(drive(args))
    with open(args.log, "w") as log:
        for due, status, latency, from_send in results:
            log.write(f"{int(due * 1e6)} {status} {int(latency * 1e6)} {int(from_send * 1e6)}\n")


if __name__ == "__main__":
    main()
