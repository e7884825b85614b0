"""The ``ingest-load`` command: a load generator for ingest, on treq and the reactor.

Owns measuring the service from the outside: it POSTs batches of samples
over N keep-alive connections, closed loop (as fast as the answers come) or
open loop at a fixed rate, and reports throughput, statuses, transport errors
and latency percentiles.  It is a client tool beside the service (wiring in
the import rules of ``tests/test_layers.py``): it imports nothing of the
service.

Pure parts, testable without a reactor: the bodies (`make_samples`,
`json_body`, `line_body`, `make_bodies`), the schedule (`Schedule`), the
tally and its arithmetic (`Tally`, `percentile`, `summarize`), the names of
transport errors (`error_kind`) and the text (`format_progress`,
`format_summary`).  The Twisted shell is `run_load`, which returns a
Deferred of the `Summary` and is what the tests drive, and `main`.

Connections.  `--connections N` runs N request loops, each with its own
`HTTPConnectionPool` holding at most one persistent connection, so exactly N
connections are opened (fewer only when fewer than N requests are sent) and
each is reused for all of its loop's requests; a connection the server
closes is replaced, and `Summary.connections_opened` counts every TCP
connection made, to be compared with the server's ``/stats``
``connections.total``.  With `--no-keepalive` the pools are not persistent:
every request sends ``Connection: close`` and opens its own connection.
One pool sized N would not do: a loop waiting for its scheduled time would
take whichever connection is free, and fewer than N would be used.

Schedule and latency.  Closed loop (no `--rate`): each loop sends its next
request when its previous answer has been read; latency runs from the send.
Open loop (`--rate R`): request i is due at ``start + i / R``, whatever the
answers; the next due request goes to the first loop that is free, which
waits until it is due.  When all N connections are busy a due request
waits for one, and its latency still runs from the time it was due, so a
slow server cannot hide its stalls by slowing the client down (coordinated
omission).  The run still ends at `--duration`: requests due by then but
never sent are reported as `Summary.unsent`.  Choose N large enough for
the rate: N connections carry at most N / latency requests a second.

What is counted.  A request is answered (any HTTP status, counted per
status; 2xx is success and counts its `batch` samples) or failed in
transport (counted per `error_kind`, ``timeout`` past `--timeout`; no
status, no latency).  Latency percentiles are over the answered requests
only.  No request is sent after `--duration` seconds from the start or
once `--requests` have been; the run lasts until every request sent has
been answered or has failed, and rates divide by that whole time.  All
times come from the injected reactor's clock.

The load generator's own CPU is measured too (`Summary.client_cpu`, a
share of one core): treq and Twisted's HTTP client cost several times what
the service spends on a request, so one core of load generator saturates
long before one core of service.  Past `SATURATED_CPU` the summary warns
that its figures are the client's limit.

Bodies.  `BODY_VARIANTS` bodies are made before the run and sent in turn,
so the client spends nothing per request on them; the samples vary in name
(`METRICS`), host tag (`HOSTS`) and value, and carry no timestamp (the time
of receipt).  ``--format json`` POSTs a JSON array to ``/metrics``,
``--format line`` line protocol (measurement = the name, field ``value``,
so the stored names are the same) to ``/write?precision=ns``.

Cost.  Latencies are kept in an ``array('d')``: 8 bytes per answered
request (80 MB for ten million); the summary sorts them once, into a list
of about 32 bytes per request.  Only ``http://`` URLs are supported.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import ceil
from typing import Any, cast
from urllib.parse import urlsplit

from hyperlink import EncodedURL
from treq import content
from treq.client import HTTPClient
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IConsumer, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

HOSTS = tuple(f"host-{number}" for number in range(8))
# Sample names and the range of their values.
METRICS = (
    ("cpu.load", 4.0),
    ("mem.used_percent", 100.0),
    ("disk.busy_percent", 100.0),
    ("net.rx_mbps", 1000.0),
)
BODY_VARIANTS = 16
FORMATS = ("json", "line")
PERCENTILES = (50.0, 90.0, 99.0)
# Share of one core past which the load generator, not the service, is what limits the run.
SATURATED_CPU = 0.9


# ---- bodies (pure) ----


def make_samples(batch: int, rng: random.Random) -> list[tuple[str, float, str]]:
    """`batch` samples as ``(name, value, host)``: names, hosts and values drawn from `rng`.

    Values have at most three decimals and are below each metric's range, so
    both formats write them exactly the same way.
    """
    samples = []
    for _ in range(batch):
        name, top = METRICS[rng.randrange(len(METRICS))]
        samples.append((name, round(rng.uniform(0.0, top), 3), HOSTS[rng.randrange(len(HOSTS))]))
    return samples


def json_body(samples: Sequence[tuple[str, float, str]]) -> bytes:
    """A JSON array of samples for ``POST /metrics``, without timestamps."""
    documents = [{"name": name, "value": value, "tags": {"host": host}} for name, value, host in samples]
    return json.dumps(documents, separators=(",", ":")).encode("utf-8")


def line_body(samples: Sequence[tuple[str, float, str]]) -> bytes:
    """Line protocol for ``POST /write``: one line per sample, field ``value``, no timestamp.

    The names and hosts of `METRICS` and `HOSTS` need no escaping.
    """
    return "".join(f"{name},host={host} value={value!r}\n" for name, value, host in samples).encode("utf-8")


def make_bodies(form: str, batch: int, count: int, rng: random.Random) -> list[bytes]:
    """`count` different bodies of `batch` samples each, in `form` (``json`` or ``line``)."""
    encode = {"json": json_body, "line": line_body}[form]
    return [encode(make_samples(batch, rng)) for _ in range(count)]


# ---- schedule and tally (pure) ----


class Schedule:
    """When each request is due, shared by all request loops.

    `next` hands out the due time of the next request, or None once the run
    is over: `requests` handed out, or, with `duration`, `now` at or past
    ``start + duration``.  Closed loop (`rate` None): a request is due at
    once, at `now`.  Open loop: the i-th request (from 0) is due at
    ``start + i / rate`` whatever `now` is, and `planned` requests are due
    within the duration; those still not handed out when it ends, because
    every loop was busy, are `unsent`.
    """

    def __init__(
        self, start: float, duration: float | None, requests: int | None, rate: float | None
    ) -> None:
        if duration is None and requests is None:
            raise ValueError("a schedule needs a duration or a number of requests")
        self.start = start
        self.end = None if duration is None else start + duration
        self.rate = rate
        limits = [requests] if requests is not None else []
        if rate is not None and duration is not None:
            # The i-th is due within the duration when i < duration * rate; the epsilon absorbs float error.
            limits.append(ceil(duration * rate - 1e-9))
        self.planned = min(limits) if limits else None
        self.handed_out = 0

    def next(self, now: float) -> float | None:
        if self.planned is not None and self.handed_out >= self.planned:
            return None
        if self.end is not None and now >= self.end:
            return None
        due = now if self.rate is None else self.start + self.handed_out / self.rate
        self.handed_out += 1
        return due

    @property
    def unsent(self) -> int:
        """Open loop: requests planned that were not handed out (so far); 0 in closed loop."""
        if self.rate is None or self.planned is None:
            return 0
        return self.planned - self.handed_out


@dataclass
class Tally:
    """What the requests came to so far: answers per status with their latencies, failures per kind."""

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    done: int = 0
    failed: int = 0

    def answered(self, status: int, latency: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(latency)
        self.done += 1

    def failure(self, kind: str) -> None:
        self.errors[kind] += 1
        self.done += 1
        self.failed += 1

    @property
    def succeeded(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of `ordered` (sorted ascending, not empty).

    The smallest value with at least `p` percent of the values at or below it:
    ``p == 0`` gives the minimum, ``p == 100`` the maximum.  Raises
    ValueError for an empty sequence or `p` outside 0..100.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    rank = max(1, ceil(p * len(ordered) / 100))  # p * n first: exact for whole p, so no rank off by one
    return ordered[rank - 1]


@dataclass(frozen=True)
class Summary:
    """A finished run.  Rates are per second of `elapsed`; latencies in milliseconds (None if none)."""

    url: str
    form: str
    connections: int
    keepalive: bool
    batch: int
    rate: float | None
    elapsed: float
    requests: int
    succeeded: int
    samples: int
    statuses: dict[int, int]
    errors: dict[str, int]
    latency_ms: dict[str, float | None]
    connections_opened: int
    unsent: int = 0
    client_cpu: float | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def success_rate(self) -> float:
        """Share of the requests answered with 2xx; 0 when none was sent."""
        return self.succeeded / self.requests if self.requests else 0.0

    def as_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready object, with rates; statuses keyed by their text."""
        return {
            "url": self.url,
            "format": self.form,
            "connections": self.connections,
            "keepalive": self.keepalive,
            "batch": self.batch,
            "rate_target": self.rate,
            "elapsed_seconds": round(self.elapsed, 6),
            "requests": self.requests,
            "succeeded": self.succeeded,
            "samples": self.samples,
            "requests_per_second": round(self.requests_per_second, 3),
            "samples_per_second": round(self.samples_per_second, 3),
            "success_rate": round(self.success_rate, 6),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": self.latency_ms,
            "connections_opened": self.connections_opened,
            "unsent": self.unsent,
            "client_cpu": None if self.client_cpu is None else round(self.client_cpu, 3),
        }

    @property
    def client_saturated(self) -> bool:
        """Whether the load generator used most of a core: then the figures measure it, not the service."""
        return self.client_cpu is not None and self.client_cpu >= SATURATED_CPU


@dataclass(frozen=True)
class LoadOptions:
    """What to run; the command line's options.  `duration` or `requests` (or both) must be set."""

    url: str = "http://127.0.0.1:8080"
    connections: int = 1
    duration: float | None = None
    requests: int | None = None
    batch: int = 1
    rate: float | None = None
    form: str = "json"
    keepalive: bool = True
    timeout: float = 30.0
    seed: int = 0


def summarize(
    options: LoadOptions,
    tally: Tally,
    elapsed: float,
    connections_opened: int,
    unsent: int = 0,
    client_cpu_seconds: float | None = None,
) -> Summary:
    """The `Summary` of a run of `options` that came to `tally` in `elapsed` seconds.  Sorts the latencies.

    `unsent` is `Schedule.unsent` at the end; `client_cpu_seconds` the CPU
    time the load generator's process used meanwhile, which the summary gives
    as a share of one core.
    """
    ordered = sorted(tally.latencies)
    latency_ms: dict[str, float | None] = {}
    for p in PERCENTILES:
        latency_ms[f"p{p:g}"] = round(percentile(ordered, p) * 1000, 3) if ordered else None
    latency_ms["max"] = round(ordered[-1] * 1000, 3) if ordered else None
    return Summary(
        url=options.url,
        form=options.form,
        connections=options.connections,
        keepalive=options.keepalive,
        batch=options.batch,
        rate=options.rate,
        elapsed=elapsed,
        requests=tally.done,
        succeeded=tally.succeeded,
        samples=tally.succeeded * options.batch,
        statuses=dict(tally.statuses),
        errors=dict(tally.errors),
        latency_ms=latency_ms,
        connections_opened=connections_opened,
        unsent=unsent,
        client_cpu=client_cpu_seconds / elapsed if client_cpu_seconds is not None and elapsed > 0 else None,
    )


def error_kind(error: BaseException) -> str:
    """A short name for a transport failure: the exception's class, and the reasons it wraps.

    Twisted's ``ResponseFailed``, ``ResponseNeverReceived`` and
    ``RequestTransmissionFailed`` carry a list of `Failure` in ``reasons``:
    ``ResponseNeverReceived(ConnectionLost)``.
    """
    name = type(error).__name__
    reasons = getattr(error, "reasons", None)
    if isinstance(reasons, list) and reasons:
        inner = sorted({getattr(getattr(reason, "type", None), "__name__", "?") for reason in reasons})
        return f"{name}({','.join(inner)})"
    return name


def format_progress(elapsed: float, requests: int, errors: int, total_errors: int) -> str:
    """One progress line: seconds since the start, requests answered and errors in the last second."""
    return f"{elapsed:6.1f} s  {requests:8,d} req/s  {errors:,d} errors ({total_errors:,d} total)"


def format_summary(summary: Summary) -> str:
    """The summary as a few lines of text (no final newline)."""
    mode = "keep-alive" if summary.keepalive else "no keep-alive"
    load = f"open loop at {summary.rate:g} req/s" if summary.rate else "closed loop"
    statuses = ", ".join(f"{status}: {count:,d}" for status, count in sorted(summary.statuses.items()))
    errors = ", ".join(f"{kind}: {count:,d}" for kind, count in sorted(summary.errors.items()))
    latency = "  ".join(
        f"{name} {value:.3f}" if value is not None else f"{name} -"
        for name, value in summary.latency_ms.items()
    )
    lines = [
        f"{summary.url} {summary.form}, batch {summary.batch}, {summary.connections} connections "
        f"({mode}, {summary.connections_opened:,d} opened), {load}",
        f"duration:  {summary.elapsed:.3f} s",
        f"requests:  {summary.requests:,d} ({summary.requests_per_second:,.1f}/s)",
        f"samples:   {summary.samples:,d} ({summary.samples_per_second:,.1f}/s)",
        f"success:   {summary.success_rate:.2%} ({summary.succeeded:,d} of {summary.requests:,d})",
        f"statuses:  {statuses or 'none'}",
        f"errors:    {errors or 'none'}",
        f"latency:   {latency} ms",
    ]
    if summary.rate:
        lines.append(
            f"schedule:  {summary.rate:,g} req/s wanted, {summary.requests_per_second:,.1f} sent; "
            f"{summary.unsent:,d} due but not sent (every connection was busy)"
        )
    if summary.client_cpu is not None:
        lines.append(f"client:    {summary.client_cpu:.0%} of one core")
    if summary.client_saturated:
        lines.append(
            "warning:   the load generator was CPU-bound: these figures are its limit, not the service's"
        )
    return "\n".join(lines)


def target(url: str, form: str) -> tuple[bytes, bytes]:
    """The URL to POST to and its Content-Type for a base `url`; raises ValueError for a URL we cannot use."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    base = url.rstrip("/")
    if form == "json":
        return (base + "/metrics").encode("ascii"), b"application/json"
    if form == "line":
        return (base + "/write?precision=ns").encode("ascii"), b"text/plain; charset=utf-8"
    raise ValueError(f"unknown format {form!r}")


# ---- the Twisted shell ----


def _body_producer(body: bytes) -> IBodyProducer:
    return cast(IBodyProducer, BytesProducer(body))


class _UriURL(EncodedURL):
    """A URL already in its URI form, so that converting it again costs nothing.

    treq converts the URL of every request with `to_uri`, which runs IDNA
    over the host each time: a fifth of the client's CPU at 1,000 requests a
    second.  Build it from the text of a URL that `to_uri` has converted once.
    """

    def to_uri(self) -> EncodedURL:
        return self


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written in one piece.

    treq's default producer for bytes, ``FileBodyProducer``, writes through a
    cooperator on later reactor turns; this one writes at once, so the head
    and the body leave in one send.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        writer: Any = consumer  # mypy without a zope plugin takes an interface's methods as unbound
        writer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """Connects through `endpoint` and counts the connections made in `counter[0]`."""

    def __init__(self, endpoint: IStreamClientEndpoint, counter: list[int]) -> None:
        self._endpoint = endpoint
        self._counter = counter

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        def made(protocol: IProtocol) -> IProtocol:
            self._counter[0] += 1
            return protocol

        endpoint: Any = self._endpoint  # see BytesProducer.startProducing
        connecting: Deferred[IProtocol] = endpoint.connect(protocolFactory)
        return connecting.addCallback(made)


@implementer(IAgentEndpointFactory)
class CountingEndpointFactory:
    """The Agent's endpoints: TCP for an IP address (no resolver round trip), else a HostnameEndpoint."""

    def __init__(self, reactor: Any, counter: list[int]) -> None:
        self._reactor = reactor
        self._counter = counter

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        endpoint: object
        if isIPAddress(host):
            endpoint = TCP4ClientEndpoint(self._reactor, host, uri.port)
        elif isIPv6Address(host):
            endpoint = TCP6ClientEndpoint(self._reactor, host, uri.port)  # type: ignore[no-untyped-call]
        else:
            endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port)
        # Casts: without a zope plugin mypy does not see that a class provides an interface.
        counting = CountingEndpoint(cast(IStreamClientEndpoint, endpoint), self._counter)
        return cast(IStreamClientEndpoint, counting)


def run_load(
    reactor: Any,
    options: LoadOptions,
    progress: Callable[[str], None] | None = None,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Deferred[Summary]:
    """Run the load `options` describe on `reactor`; fires with the `Summary` once every request is done.

    `progress`, if given, receives a `format_progress` line every second;
    `cpu_clock` gives the CPU seconds this process has used.  Raises
    ValueError at once for options that cannot run.
    """
    url, content_type = target(options.url, options.form)
    if options.duration is None and options.requests is None:
        raise ValueError("give a duration or a number of requests")
    return Deferred.fromCoroutine(_run(reactor, options, url, content_type, progress, cpu_clock))


async def _run(
    reactor: Any,
    options: LoadOptions,
    url: bytes,
    content_type: bytes,
    progress: Callable[[str], None] | None,
    cpu_clock: Callable[[], float],
) -> Summary:
    parsed = _UriURL.from_text(EncodedURL.from_text(url.decode("ascii")).to_uri().to_text())
    bodies = make_bodies(options.form, options.batch, BODY_VARIANTS, random.Random(options.seed))
    headers = Headers({b"Content-Type": [content_type]})
    counter = [0]
    endpoints = CountingEndpointFactory(reactor, counter)
    pools = []
    clients = []
    for _ in range(options.connections):
        pool = HTTPConnectionPool(reactor, persistent=options.keepalive)  # type: ignore[no-untyped-call]
        pool.maxPersistentPerHost = 1
        pool.retryAutomatically = False
        pools.append(pool)
        agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            reactor, cast(IAgentEndpointFactory, endpoints), pool=pool
        )
        clients.append(HTTPClient(agent, data_to_body_producer=_body_producer))
    tally = Tally()
    cpu_start = cpu_clock()
    start = reactor.seconds()
    schedule = Schedule(start, options.duration, options.requests, options.rate)

    reported = [0, 0]  # done, failed at the last progress line

    def report() -> None:
        if progress is not None:
            progress(
                format_progress(
                    reactor.seconds() - start,
                    tally.done - reported[0],
                    tally.failed - reported[1],
                    tally.failed,
                )
            )
        reported[:] = [tally.done, tally.failed]

    ticker = LoopingCall(report)
    ticker.clock = reactor
    ticker.start(1.0, now=False)
    try:
        loops = [
            Deferred.fromCoroutine(
                _request_loop(
                    reactor, client, parsed, headers, bodies, number, schedule, tally, options.timeout
                )
            )
            for number, client in enumerate(clients)
        ]
        await gatherResults(loops, consumeErrors=True)
        elapsed = reactor.seconds() - start
        cpu = cpu_clock() - cpu_start
    finally:
        ticker.stop()
        closing = [pool.closeCachedConnections() for pool in pools]  # type: ignore[no-untyped-call]
        await gatherResults(closing, consumeErrors=True)
    return summarize(options, tally, elapsed, counter[0], schedule.unsent, cpu)


async def _request_loop(
    reactor: Any,
    client: HTTPClient,
    url: EncodedURL,
    headers: Headers,
    bodies: list[bytes],
    number: int,
    schedule: Schedule,
    tally: Tally,
    timeout: float,
) -> None:
    """One connection's loop: take the next due request, wait for its time, send it, read the answer."""
    turn = number
    while True:
        due = schedule.next(reactor.seconds())
        if due is None:
            return
        wait = due - reactor.seconds()
        if wait > 0:
            await deferLater(reactor, wait)
        body = bodies[turn % len(bodies)]
        turn += 1
        try:
            status = await _post(reactor, client, url, headers, body, timeout)
        except DeferredTimeout:
            tally.failure("timeout")
        except Exception as error:
            tally.failure(error_kind(error))
        else:
            tally.answered(status, reactor.seconds() - due)


def _post(
    reactor: Any, client: HTTPClient, url: EncodedURL, headers: Headers, body: bytes, timeout: float
) -> Deferred[int]:
    """POST `body` and read the whole answer; fires with its status, or fails (TimeoutError: `timeout`)."""
    answer = client.post(
        url, data=body, headers=headers, allow_redirects=False, unbuffered=True, reactor=reactor
    )

    def read(response: IResponse) -> Deferred[int]:
        code: int = response.code
        return content(response).addCallback(lambda _: code)

    status: Deferred[int] = answer.addCallback(read)
    return status.addTimeout(timeout, reactor)


# ---- the command ----


def parse_args(argv: Sequence[str] | None = None) -> tuple[LoadOptions, bool]:
    """The command line as `LoadOptions`, and whether to print the summary as JSON.  Exits 2 on misuse."""
    parser = argparse.ArgumentParser(
        prog="ingest-load",
        description="Send metrics to an ingest service and report throughput and latency.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="base URL (default %(default)s)")
    parser.add_argument("--connections", type=_positive_int, default=1, help="connections, each its own loop")
    parser.add_argument("--duration", type=_positive_float, help="seconds to send for (default 10)")
    parser.add_argument("--requests", type=_positive_int, help="requests to send in all")
    parser.add_argument("--batch", type=_positive_int, default=1, help="samples per request (default 1)")
    parser.add_argument("--rate", type=_positive_float, help="requests per second in all (open loop)")
    parser.add_argument("--format", choices=FORMATS, default="json", dest="form", help="json or line")
    parser.add_argument(
        "--no-keepalive", action="store_false", dest="keepalive", help="a connection per request"
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds per request (default 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample values (default 0)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None or args.requests is not None else 10.0
    try:
        target(args.url, args.form)
    except ValueError as error:
        parser.error(str(error))
    options = LoadOptions(
        url=args.url,
        connections=args.connections,
        duration=duration,
        requests=args.requests,
        batch=args.batch,
        rate=args.rate,
        form=args.form,
        keepalive=args.keepalive,
        timeout=args.timeout,
        seed=args.seed,
    )
    return options, args.json


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """``ingest-load``: progress lines on stderr, the summary on stdout."""
    options, as_json = parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def run(reactor: Any) -> None:
        summary = await run_load(reactor, options, progress)
        if as_json:
            print(json.dumps(summary.as_json()))
        else:
            print(format_summary(summary))

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
