"""The ``ingest-load`` command: a load generator for ingest, on treq and the reactor.

Owns measuring the service from the outside: it POSTs batches of samples
over N keep-alive connections, closed loop (as fast as the answers come) or
open loop at a fixed rate, from one process or several, and reports
throughput, statuses, transport errors and latency percentiles.  It is a
client tool beside the service (``CLIENTS`` in the import rules of
``tests/test_layers.py``): it imports nothing of the service.

Pure parts, testable without a reactor: the bodies (`make_samples`,
`json_body`, `line_body`, `prometheus_body`, `otlp_body`, `make_bodies`), the
schedule (`Schedule`), the shares of the processes (`split`), the tally and
its arithmetic (`Tally`, `Report`, `merge_reports`, `summarize`), the names
of transport errors (`error_kind`) and the text (`ProgressMeter`,
`format_progress`, `format_summary`).  The Twisted shell is `run_load`,
which returns a Deferred of the `Summary` and is what the tests drive,
`measure` (one process's run), `WorkerProcess` (a worker seen from the
parent), `worker_main` and `main`.

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

Processes.  treq and Twisted's HTTP client cost several times what the
service spends on a request (about 0.6 ms of CPU a request), so one process
cannot saturate one core of ingest.  `--processes P` runs the load in P
worker processes (``python -m ingest.load --worker OPTIONS``, this
interpreter), each with its `split` share: the connections and requests
spread as evenly as whole numbers allow, the rate divided by P (each worker
keeps its own open-loop schedule from its own start), its own seed.  The
parent starts them together (each says ``ready``, then the parent writes
``go`` to each), shows their summed counts, and merges the `Report` each
sends at the end as one JSON line on its stdout: counts added, histograms
added (`Tally.add`), the longest elapsed time (they started within
milliseconds of each other).  P must not exceed the connections (or the
requests, when given).  A worker that dies fails the run, after the others
are stopped.

What is counted.  A request is answered (any HTTP status, counted per
status; 2xx is success and counts its `batch` samples) or failed in
transport (counted per `error_kind`, ``timeout`` past `--timeout`; no
status, no latency).  Latency percentiles are over the answered requests
only, from an HDR histogram (`Tally`).  No request is sent after
`--duration` seconds from the start or once `--requests` have been; the run
lasts until every request sent has been answered or has failed, and rates
divide by that whole time.  All times come from the injected reactor's
clock.

The load generator's own CPU is measured too (`Summary.client_cpu`, in
cores, summed over the processes).  Past `SATURATED_CPU` of one core in its
busiest process the summary warns that its figures are the client's limit.

Progress.  `run_load` calls its `progress` every second with the requests
done and failed so far (the workers send theirs twice a second); `main`
shows them as one line rewritten in place, with the rate since the line
before, only when stderr is a terminal.

Bodies.  `BODY_VARIANTS` bodies are made before the run and sent in turn,
so the client spends nothing per request on them; the samples vary in name
(`METRICS`), host tag (`HOSTS`) and value, and every format stores the same
names, values and ``host`` tag, `batch` samples a request.  ``--format
json`` POSTs a JSON array to ``/metrics``, ``line`` line protocol
(measurement = the name, field ``value``) to ``/write?precision=ns``,
``prometheus`` a snappy remote-write ``WriteRequest`` (a series a sample) to
``/api/v1/write``, ``otlp`` an ``ExportMetricsServiceRequest`` (a Gauge a
name, a point a sample) to ``/v1/metrics``.  None carries a timestamp (the
time of receipt) but remote write, which must: its samples carry the time
the bodies were made, so a long run stores them in the past.

Cost.  A latency is recorded in an HDR histogram of microseconds, to 3
significant digits, up to an hour (`new_histogram`): about 190 KB a process
whatever the run's length, a few hundred bytes encoded for the parent, a
few microseconds to record.  Only ``http://`` URLs are supported.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from math import ceil
from typing import Any, cast
from urllib.parse import urlsplit

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]
from hyperlink import EncodedURL
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from treq import content
from treq.client import HTTPClient
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IConsumer, IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater, react
from twisted.python.failure import Failure
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
FORMATS = ("json", "line", "prometheus", "otlp")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
# Share of one core past which the load generator, not the service, is what limits the run.
SATURATED_CPU = 0.9
# Latencies are recorded in whole microseconds, from 0 to an hour, to 3 significant digits.
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


# ---- bodies (pure) ----


def make_samples(batch: int, rng: random.Random) -> list[tuple[str, float, str]]:
    """`batch` samples as ``(name, value, host)``: names, hosts and values drawn from `rng`.

    Values have at most three decimals and are below each metric's range, so
    every format writes them exactly the same way.
    """
    samples = []
    for _ in range(batch):
        name, top = METRICS[rng.randrange(len(METRICS))]
        samples.append((name, round(rng.uniform(0.0, top), 3), HOSTS[rng.randrange(len(HOSTS))]))
    return samples


def json_body(samples: Sequence[tuple[str, float, str]], time_ms: int = 0) -> bytes:
    """A JSON array of samples for ``POST /metrics``, without timestamps (`time_ms` is not used)."""
    documents = [{"name": name, "value": value, "tags": {"host": host}} for name, value, host in samples]
    return json.dumps(documents, separators=(",", ":")).encode("utf-8")


def line_body(samples: Sequence[tuple[str, float, str]], time_ms: int = 0) -> bytes:
    """Line protocol for ``POST /write``: one line per sample, field ``value``, no timestamp (`time_ms` is
    not used).

    The names and hosts of `METRICS` and `HOSTS` need no escaping.
    """
    return "".join(f"{name},host={host} value={value!r}\n" for name, value, host in samples).encode("utf-8")


def prometheus_body(samples: Sequence[tuple[str, float, str]], time_ms: int) -> bytes:
    """A Prometheus remote write 1.0 body for ``POST /api/v1/write``: a snappy block of a ``WriteRequest``
    with one series a sample (labels ``__name__`` and ``host``, in Prometheus' order) holding that sample
    at `time_ms` (milliseconds since the epoch: remote write has no "now").
    """
    request = write_request_class()()
    for name, value, host in samples:
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=name)
        series.labels.add(name="host", value=host)
        series.samples.add(value=value, timestamp=time_ms)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def otlp_body(samples: Sequence[tuple[str, float, str]], time_ms: int = 0) -> bytes:
    """An OTLP/HTTP protobuf ``ExportMetricsServiceRequest`` for ``POST /v1/metrics``: one resource and one
    scope, neither with attributes or a name (so the stored tags are the sample's ``host`` alone), a Gauge a
    metric name, a point a sample (``as_double``, attribute ``host``, no time: the time of receipt;
    `time_ms` is not used).
    """
    request = ExportMetricsServiceRequest()
    scope = request.resource_metrics.add().scope_metrics.add()
    metrics: dict[str, Any] = {}
    for name, value, host in samples:
        metric = metrics.get(name)
        if metric is None:
            metric = metrics[name] = scope.metrics.add(name=name)
        point = metric.gauge.data_points.add(as_double=value)
        point.attributes.append(KeyValue(key="host", value=AnyValue(string_value=host)))
    body: bytes = request.SerializeToString()
    return body


BODY_MAKERS: dict[str, Callable[[Sequence[tuple[str, float, str]], int], bytes]] = {
    "json": json_body,
    "line": line_body,
    "prometheus": prometheus_body,
    "otlp": otlp_body,
}


def make_bodies(form: str, batch: int, count: int, rng: random.Random, time_ms: int = 0) -> list[bytes]:
    """`count` different bodies of `batch` samples each, in `form` (one of `FORMATS`).

    `time_ms` is the samples' timestamp where the format needs one (``prometheus``).
    """
    encode = BODY_MAKERS[form]
    return [encode(make_samples(batch, rng), time_ms) for _ in range(count)]


@cache
def write_request_class() -> Any:
    """Prometheus' ``WriteRequest`` message class, with the fields `prometheus_body` writes.

    No maintained package ships prompb's messages and this tool imports
    nothing of the service (which builds the full ones), so this builds the
    subset from a descriptor, in a pool of its own, once: ``WriteRequest{
    repeated TimeSeries timeseries = 1}``, ``TimeSeries{repeated Label labels
    = 1; repeated Sample samples = 2}``, ``Label{string name = 1; string value
    = 2}``, ``Sample{double value = 1; int64 timestamp = 2}``, as in
    prompb's ``types.proto`` and ``remote.proto``.
    """
    proto = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="ingest_load_prompb.proto", package="prometheus")
    file.syntax = "proto3"
    fields: dict[str, list[tuple[str, int, int, str | None]]] = {
        "Label": [("name", 1, proto.TYPE_STRING, None), ("value", 2, proto.TYPE_STRING, None)],
        "Sample": [("value", 1, proto.TYPE_DOUBLE, None), ("timestamp", 2, proto.TYPE_INT64, None)],
        "TimeSeries": [
            ("labels", 1, proto.TYPE_MESSAGE, "Label"),
            ("samples", 2, proto.TYPE_MESSAGE, "Sample"),
        ],
        "WriteRequest": [("timeseries", 1, proto.TYPE_MESSAGE, "TimeSeries")],
    }
    for message, message_fields in fields.items():
        declared = file.message_type.add(name=message)
        for name, number, kind, of in message_fields:
            added = declared.field.add(name=name, number=number, type=kind)
            if of is None:
                added.label = proto.LABEL_OPTIONAL
            else:
                added.label = proto.LABEL_REPEATED
                added.type_name = f".prometheus.{of}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


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


def new_histogram() -> Any:
    """An empty HDR histogram of latencies in microseconds: 0 to `HIGHEST_US`, `SIGNIFICANT_DIGITS` digits.

    About 190 KB of counts whatever it holds (23 buckets of 1,024 8-byte
    counters for an hour at 3 digits); it encodes to a few hundred bytes,
    compressed, which is what a worker process sends.
    """
    return HdrHistogram(1, HIGHEST_US, SIGNIFICANT_DIGITS)


@dataclass
class Tally:
    """What the requests came to so far: answers per status, failures per kind, and the answers' latencies
    in `latencies`, an HDR histogram of microseconds (`new_histogram`).

    Recording a latency costs a few microseconds and no memory; a latency is
    kept to 3 significant digits (a reported percentile is the highest value
    of its bucket, at most 0.1% above the true one).  Tallies add up
    (`add`): that is how the figures of several processes are merged.
    """

    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: Any = field(default_factory=new_histogram)
    done: int = 0
    failed: int = 0

    def answered(self, status: int, latency: float) -> None:
        """Count an answer with `status` after `latency` seconds (clamped to 0 .. an hour)."""
        self.statuses[status] += 1
        self.latencies.record_value(min(max(round(latency * 1_000_000), 0), HIGHEST_US))
        self.done += 1

    def failure(self, kind: str) -> None:
        self.errors[kind] += 1
        self.done += 1
        self.failed += 1

    def add(self, other: Tally) -> None:
        """Add `other`'s counts and latencies to this tally's."""
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.latencies.add(other.latencies)
        self.done += other.done
        self.failed += other.failed

    @property
    def succeeded(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    def latency_ms(self) -> dict[str, float | None]:
        """The latency percentiles of `PERCENTILES` and the maximum, in milliseconds; None when nothing was
        answered.  Each is the highest value its histogram bucket holds (HDR's convention)."""
        if not self.latencies.get_total_count():
            return {**{f"p{p:g}": None for p in PERCENTILES}, "max": None}
        values = self.latencies.get_percentile_to_value_dict([*PERCENTILES, 100.0])
        latency_ms: dict[str, float | None] = {f"p{p:g}": round(values[p] / 1000, 3) for p in PERCENTILES}
        latency_ms["max"] = round(values[100.0] / 1000, 3)
        return latency_ms

    def as_json(self) -> dict[str, Any]:
        """The tally as a JSON-ready object; the histogram as HDR's compressed base64 text (`encode`)."""
        return {
            "statuses": {str(status): count for status, count in self.statuses.items()},
            "errors": dict(self.errors),
            "done": self.done,
            "failed": self.failed,
            "latencies": self.latencies.encode().decode("ascii"),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Tally:
        """The tally `as_json` wrote.  Raises KeyError, ValueError or HDR's errors for another document."""
        tally = cls(
            statuses=Counter({int(status): int(count) for status, count in document["statuses"].items()}),
            errors=Counter({str(kind): int(count) for kind, count in document["errors"].items()}),
            done=int(document["done"]),
            failed=int(document["failed"]),
        )
        tally.latencies.decode_and_add(document["latencies"].encode("ascii"))
        return tally


@dataclass
class Report:
    """What one run came to, before the arithmetic: one process's, or several merged (`merge_reports`).

    `elapsed` runs from the first request's start until every request has
    been answered or has failed; `cpu_seconds` holds the CPU time of each
    process that ran requests, in order.
    """

    tally: Tally
    elapsed: float
    connections_opened: int
    unsent: int = 0
    cpu_seconds: tuple[float, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "tally": self.tally.as_json(),
            "elapsed": self.elapsed,
            "connections_opened": self.connections_opened,
            "unsent": self.unsent,
            "cpu_seconds": list(self.cpu_seconds),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Report:
        """The report `as_json` wrote.  Raises KeyError, ValueError or HDR's errors for another document."""
        return cls(
            tally=Tally.from_json(document["tally"]),
            elapsed=float(document["elapsed"]),
            connections_opened=int(document["connections_opened"]),
            unsent=int(document["unsent"]),
            cpu_seconds=tuple(float(seconds) for seconds in document["cpu_seconds"]),
        )


def merge_reports(reports: Sequence[Report]) -> Report:
    """One report of runs made side by side: counts and latencies added, the longest `elapsed` (they
    started together), every process's CPU time."""
    tally = Tally()
    for report in reports:
        tally.add(report.tally)
    return Report(
        tally=tally,
        elapsed=max((report.elapsed for report in reports), default=0.0),
        connections_opened=sum(report.connections_opened for report in reports),
        unsent=sum(report.unsent for report in reports),
        cpu_seconds=tuple(seconds for report in reports for seconds in report.cpu_seconds),
    )


@dataclass(frozen=True)
class Summary:
    """A finished run.  Rates are per second of `elapsed`; latencies in milliseconds (None if none).

    `client_cpu` is the load generator's CPU in cores (the sum over its
    processes: 1.5 is one and a half cores), `client_cpu_busiest` the share of
    one core its busiest process used.
    """

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
    processes: int = 1
    client_cpu_busiest: float | None = None

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
            "processes": self.processes,
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
            "client_cpu_busiest": None
            if self.client_cpu_busiest is None
            else round(self.client_cpu_busiest, 3),
        }

    @property
    def client_saturated(self) -> bool:
        """Whether a load generator process used most of a core: then the figures measure it, not the
        service."""
        return self.client_cpu_busiest is not None and self.client_cpu_busiest >= SATURATED_CPU


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
    processes: int = 1


def split(options: LoadOptions) -> list[LoadOptions]:
    """The share of each of `options.processes` processes, one process each.

    Connections and requests are spread as evenly as whole numbers allow
    (the first processes take one more), the rate is divided evenly, the
    duration is the same; process i draws its samples from seed ``seed + i``.
    Raises ValueError when a process would have no connection or no request.
    """
    count = options.processes
    if count < 1:
        raise ValueError(f"expected at least one process, got {count}")
    if options.connections < count:
        raise ValueError(f"{count} processes need at least {count} connections, got {options.connections}")
    if options.requests is not None and options.requests < count:
        raise ValueError(f"{count} processes need at least {count} requests, got {options.requests}")
    shares = []
    for index in range(count):
        requests = options.requests
        if requests is not None:
            requests = requests // count + (index < requests % count)
        shares.append(
            replace(
                options,
                connections=options.connections // count + (index < options.connections % count),
                requests=requests,
                rate=None if options.rate is None else options.rate / count,
                seed=options.seed + index,
                processes=1,
            )
        )
    return shares


def summarize(options: LoadOptions, report: Report) -> Summary:
    """The `Summary` of a run of `options` that came to `report`."""
    tally, elapsed = report.tally, report.elapsed
    cpu = report.cpu_seconds
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
        latency_ms=tally.latency_ms(),
        connections_opened=report.connections_opened,
        unsent=report.unsent,
        client_cpu=sum(cpu) / elapsed if cpu and elapsed > 0 else None,
        processes=options.processes,
        client_cpu_busiest=max(cpu) / elapsed if cpu and elapsed > 0 else None,
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


class ProgressMeter:
    """The live progress line: requests done and failed so far, and the rate since the line before."""

    def __init__(self) -> None:
        self._last = (0.0, 0)

    def line(self, elapsed: float, done: int, failed: int) -> str:
        """The line at `elapsed` seconds from the start, `done` requests answered or failed by then, `failed`
        of them in transport."""
        last_elapsed, last_done = self._last
        rate = (done - last_done) / (elapsed - last_elapsed) if elapsed > last_elapsed else 0.0
        self._last = (elapsed, done)
        return format_progress(elapsed, done, rate, failed)


def format_progress(elapsed: float, requests: int, rate: float, errors: int) -> str:
    """One progress line: seconds since the start, requests done, their current rate and transport errors."""
    return f"{elapsed:6.1f} s  {requests:10,d} requests  {rate:9,.0f} req/s  {errors:,d} errors"


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
    processes = f" in {summary.processes} processes" if summary.processes > 1 else ""
    lines = [
        f"{summary.url} {summary.form}, batch {summary.batch}, {summary.connections} connections "
        f"({mode}, {summary.connections_opened:,d} opened){processes}, {load}",
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
        if summary.processes > 1 and summary.client_cpu_busiest is not None:
            lines.append(
                f"client:    {summary.client_cpu:.0%} of one core in {summary.processes} processes "
                f"(the busiest {summary.client_cpu_busiest:.0%})"
            )
        else:
            lines.append(f"client:    {summary.client_cpu:.0%} of one core")
    if summary.client_saturated:
        lines.append(
            "warning:   the load generator was CPU-bound: these figures are its limit, not the service's"
        )
    return "\n".join(lines)


def target(url: str, form: str) -> tuple[bytes, dict[bytes, bytes]]:
    """The URL to POST to and the headers of a body in `form` for a base `url`; raises ValueError for a URL
    we cannot use or an unknown format."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    base = url.rstrip("/")
    if form == "json":
        return (base + "/metrics").encode("ascii"), {b"Content-Type": b"application/json"}
    if form == "line":
        return (base + "/write?precision=ns").encode("ascii"), {b"Content-Type": b"text/plain; charset=utf-8"}
    if form == "prometheus":
        return (base + "/api/v1/write").encode("ascii"), {
            b"Content-Type": b"application/x-protobuf",
            b"Content-Encoding": b"snappy",
            b"X-Prometheus-Remote-Write-Version": b"0.1.0",
        }
    if form == "otlp":
        return (base + "/v1/metrics").encode("ascii"), {b"Content-Type": b"application/x-protobuf"}
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


# How often a worker process tells the parent its counts, in seconds.
WORKER_PROGRESS_INTERVAL = 0.5


def run_load(
    reactor: Any,
    options: LoadOptions,
    progress: Callable[[float, int, int], None] | None = None,
    cpu_clock: Callable[[], float] = time.process_time,
    spawn_worker: Callable[[ProcessProtocol, LoadOptions], None] | None = None,
) -> Deferred[Summary]:
    """Run the load `options` describe on `reactor`; fires with the `Summary` once every request is done.

    `progress`, if given, is called every second with the seconds since the
    start and the requests done and failed so far.  With ``processes`` above
    1 the requests run in that many worker processes (`spawn_worker`, by
    default ``python -m ingest.load --worker``), each with its `split` share,
    and this process merges what they report; otherwise they run here, and
    `cpu_clock` gives the CPU seconds this process has used.  Raises
    ValueError at once for options that cannot run.
    """
    target(options.url, options.form)
    if options.duration is None and options.requests is None:
        raise ValueError("give a duration or a number of requests")
    if options.processes > 1:
        shares = split(options)
        spawn = spawn_worker or _spawn_python_worker(reactor)
        report = Deferred.fromCoroutine(_run_workers(reactor, shares, progress, spawn))
    else:
        report = measure(reactor, options, progress, 1.0, cpu_clock)
    return report.addCallback(lambda merged: summarize(options, merged))


def measure(
    reactor: Any,
    options: LoadOptions,
    progress: Callable[[float, int, int], None] | None = None,
    interval: float = 1.0,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Deferred[Report]:
    """Run `options` in this process (whatever its ``processes``); fires with its `Report`.

    `progress` is called every `interval` seconds as `run_load` says.
    """
    url, headers = target(options.url, options.form)
    return Deferred.fromCoroutine(_run(reactor, options, url, headers, progress, interval, cpu_clock))


async def _run(
    reactor: Any,
    options: LoadOptions,
    url: bytes,
    headers: dict[bytes, bytes],
    progress: Callable[[float, int, int], None] | None,
    interval: float,
    cpu_clock: Callable[[], float],
) -> Report:
    parsed = _UriURL.from_text(EncodedURL.from_text(url.decode("ascii")).to_uri().to_text())
    time_ms = int(reactor.seconds() * 1000)
    bodies = make_bodies(options.form, options.batch, BODY_VARIANTS, random.Random(options.seed), time_ms)
    request_headers = Headers({name: [value] for name, value in headers.items()})
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

    def report() -> None:
        if progress is not None:
            progress(reactor.seconds() - start, tally.done, tally.failed)

    ticker = LoopingCall(report)
    ticker.clock = reactor
    ticker.start(interval, now=False)
    try:
        loops = [
            Deferred.fromCoroutine(
                _request_loop(
                    reactor, client, parsed, request_headers, bodies, number, schedule, tally, options.timeout
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
    return Report(tally, elapsed, counter[0], schedule.unsent, (cpu,))


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


# ---- worker processes ----


class WorkerProcess(ProcessProtocol):
    """A worker process, seen from the parent: it reads the messages the worker writes on its stdout.

    The worker writes one JSON object a line (`worker_message`): ``ready``
    once it can start, ``progress`` with its counts so far, and ``report``
    with its `Report` at the end; the parent writes ``go`` on its stdin to
    start it.  `ready` fires on ``ready``; `ended` fires with the report
    when the process has exited 0 after sending one, and fails with
    RuntimeError otherwise, or when a line was not a message (and then
    `ready` fails too if it had not fired).
    """

    def __init__(self) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[Report] = Deferred()
        self.done = 0
        self.failed = 0
        self._buffer = b""
        self._report: Report | None = None
        self._garbled = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            try:
                self._received(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                # Not a message of ours (something else wrote to the worker's stdout): the report cannot
                # be trusted to be whole, so the run fails, with the line, when the worker ends.
                self._garbled = self._garbled or line[:200]

    def _received(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "ready" and not self.ready.called:
            self.ready.callback(None)
        elif kind == "progress":
            self.done, self.failed = int(message["done"]), int(message["failed"])
        elif kind == "report":
            self._report = Report.from_json(message["report"])
            self.done, self.failed = self._report.tally.done, self._report.tally.failed

    def start(self) -> None:
        """Tell the worker to start sending."""
        transport: Any = self.transport  # see BytesProducer.startProducing
        transport.write(b"go\n")

    def stop(self) -> None:
        """Ask a worker that is still running to stop (SIGTERM); it then ends without a report."""
        transport: Any = self.transport
        if transport is not None and transport.pid is not None:
            transport.signalProcess("TERM")

    def processEnded(self, reason: Failure) -> None:
        if getattr(reason.value, "exitCode", None) == 0 and self._report is not None and not self._garbled:
            self.ended.callback(self._report)
            return
        if self._garbled:
            failure = RuntimeError(f"a worker process wrote what is not a message: {self._garbled!r}")
        else:
            failure = RuntimeError(f"a worker process ended without its report: {reason.value}")
        if not self.ready.called:
            self.ready.errback(failure)
        self.ended.errback(failure)


def _spawn_python_worker(reactor: Any) -> Callable[[ProcessProtocol, LoadOptions], None]:
    """Spawn ``python -m ingest.load --worker OPTIONS`` with this interpreter and environment; its stderr is
    ours."""

    def spawn(protocol: ProcessProtocol, options: LoadOptions) -> None:
        argv = [sys.executable, "-m", "ingest.load", "--worker", json.dumps(asdict(options))]
        reactor.spawnProcess(protocol, sys.executable, argv, env=None, childFDs={0: "w", 1: "r", 2: 2})

    return spawn


async def _run_workers(
    reactor: Any,
    shares: Sequence[LoadOptions],
    progress: Callable[[float, int, int], None] | None,
    spawn: Callable[[ProcessProtocol, LoadOptions], None],
) -> Report:
    """Start a worker for each share, start them together once all are ready, merge their reports."""
    workers = [WorkerProcess() for _ in shares]
    for worker, share in zip(workers, shares, strict=True):
        spawn(worker, share)
    try:
        await gatherResults([worker.ready for worker in workers], consumeErrors=True)
    except Exception:
        await _stop_all(workers)
        raise
    for worker in workers:
        worker.start()
    start = reactor.seconds()

    def report() -> None:
        if progress is not None:
            done = sum(worker.done for worker in workers)
            progress(reactor.seconds() - start, done, sum(worker.failed for worker in workers))

    ticker = LoopingCall(report)
    ticker.clock = reactor
    ticker.start(1.0, now=False)
    try:
        reports = await gatherResults([worker.ended for worker in workers], consumeErrors=True)
    except Exception:
        await _stop_all(workers)
        raise
    finally:
        ticker.stop()
    return merge_reports(reports)


async def _stop_all(workers: Sequence[WorkerProcess]) -> None:
    """After one worker failed: stop the others and wait until every one has ended."""
    for worker in workers:
        worker.stop()
    await DeferredList([worker.ended for worker in workers], consumeErrors=True)


def worker_message(kind: str, **fields: Any) -> bytes:
    """One line a worker writes to the parent: a JSON object of `kind` and `fields`."""
    return json.dumps({"kind": kind, **fields}, separators=(",", ":")).encode("utf-8") + b"\n"


def worker_main(options_json: str) -> None:
    """A worker process: says it is ready, waits for ``go`` on stdin, runs `options_json`'s load in this
    process and writes its progress and its report to stdout (`WorkerProcess` reads them).

    The worker blocks on stdin before its reactor runs, and writes its few
    short lines with blocking writes, flushed, so nothing is left in a
    buffer when it exits.  It exits 1 without a report if stdin closes first.
    """
    options = LoadOptions(**json.loads(options_json))
    out = sys.stdout.buffer

    def send(message: bytes) -> None:
        out.write(message)
        out.flush()

    send(worker_message("ready"))
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(1)

    def progress(elapsed: float, done: int, failed: int) -> None:
        send(worker_message("progress", done=done, failed=failed))

    async def run(reactor: Any) -> None:
        report = await measure(reactor, options, progress, WORKER_PROGRESS_INTERVAL)
        send(worker_message("report", report=report.as_json()))

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


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
    parser.add_argument(
        "--format", choices=FORMATS, default="json", dest="form", help="json, line, prometheus or otlp"
    )
    parser.add_argument(
        "--no-keepalive", action="store_false", dest="keepalive", help="a connection per request"
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds per request (default 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample values (default 0)")
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="processes sharing the connections, requests and rate (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None or args.requests is not None else 10.0
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
        processes=args.processes,
    )
    try:
        target(args.url, args.form)
        split(options)
    except ValueError as error:
        parser.error(str(error))
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
    """``ingest-load``: a live progress line on stderr when it is a terminal, the summary on stdout.

    ``--worker OPTIONS`` (not in ``--help``) runs a worker process of a run
    with ``--processes`` (`worker_main`).
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["--worker"] and len(arguments) == 2:
        worker_main(arguments[1])
        return
    options, as_json = parse_args(arguments)
    live = sys.stderr.isatty()
    meter = ProgressMeter()

    def progress(elapsed: float, done: int, failed: int) -> None:
        sys.stderr.write("\r" + meter.line(elapsed, done, failed) + "\x1b[K")
        sys.stderr.flush()

    async def run(reactor: Any) -> None:
        summary = await run_load(reactor, options, progress if live else None)
        if live:
            sys.stderr.write("\n")
        if as_json:
            print(json.dumps(summary.as_json()))
        else:
            print(format_summary(summary))

    react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
