"""Routes: what each method and path does, and what the client gets back.

The channel (`ingest.protocol`) asks `Api.check` about a request as soon as
its head is complete, so a wrong path, method, media type or encoding is
refused before its body is read (and before ``100 Continue`` is sent), and
then hands the whole request to the endpoint `check` returned.

Ingest routes send the body to the parse queue, put what it yields in the
buffer and answer: ``POST /metrics`` with ``202 {"accepted": N}``, the
InfluxDB write routes with ``204``.  When some samples were invalid the
valid ones are kept and the answer is ``400`` with the partial-write body
(docs/API.md).  When the buffer has no room for a request's samples,
none of them are kept and the answer is ``503`` with ``Retry-After``.

With ``--ack durable`` the 2xx waits until the batch holding the request's
samples is written and fsynced (`ingest.flusher.Flusher.wait_durable`;
with ``--ack replicated``, until JetStream acknowledged it: same hook);
while storage is failing, durable ingest requests get ``503 storage
failing`` with ``Retry-After`` at once (those already waiting keep waiting
for the write).  Buffered ones are still accepted while the buffer has
room: it keeps them until the disk recovers.

With ``--auth-tokens``, every route but ``/ping`` and ``/health`` needs a
token (401 with ``WWW-Authenticate`` otherwise; checked from the head, before
the body is read); the token's name is then the client, else its address.
With ``--rate-limit``, a client's ingest request whose samples exceed its
bucket is refused whole with 429 and a ``Retry-After`` from the bucket.

The InfluxDB routes take ``db``/``rp`` (v1) and ``org``/``bucket`` (v2)
and ignore them (ingest has one store), and ``precision``: v1 accepts
``n ns u us ms s m h``, v2 ``ns us ms s``; default ``ns``.

Error bodies are shaped in `ingest.messages.error_response`, the one place.

A bug met decoding one body (an `ingest.errors.InternalError` from the
parse pool, or inline with ``--threads 0``) fails that request only: it is
logged here with its traceback, once, whichever path it came by, and the
client gets ``500 {"error": "internal error", "detail": "see the service
log"}``, nothing of the exception's text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qs

import ujson
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest import __version__, otlp
from ingest.auth import Tokens
from ingest.bodies import (
    COLLECTD,
    LINE,
    OTLP_JSON,
    OTLP_PROTOBUF,
    REMOTE_WRITE,
    Decoded,
    Job,
    collectd_format,
    is_gzip,
    line_format,
    metrics_format,
    otlp_format,
    remote_write_format,
)
from ingest.buffer import Buffer
from ingest.errors import IngestError, InternalError
from ingest.exposition import CONTENT_TYPE, Exposition
from ingest.lineproto import PRECISIONS
from ingest.messages import ERROR_STATUSES, JSON_TYPE, Headers, Request, Response, error_response
from ingest.pool import Outcome, ParseQueue
from ingest.ratelimit import ClientLimits
from ingest.sample import Converted
from ingest.stats import Stats
from ingest.workerstats import WRITTEN_AT, merge

RETRY_AFTER = b"1"
INFLUXDB_VERSION = b"1.8.10"
"""What ``/ping`` reports in ``X-Influxdb-Version``: the v1 write API that ingest speaks."""

Endpoint = Callable[[Request], "Response | Deferred[Response] | None"]
"""A route: it answers at once (a `Response`), later (a Deferred), or later
through ``request.respond`` (None)."""
V2_PRECISIONS = {name: PRECISIONS[name] for name in ("ns", "us", "ms", "s")}
OPEN_PATHS = frozenset((b"/ping", b"/health"))
REMOTE_WRITE_PATHS = frozenset((b"/api/v1/write", b"/api/v1/push"))
OTLP_PATH = b"/v1/metrics"
OTLP_TYPES = {OTLP_JSON: b"application/json", OTLP_PROTOBUF: b"application/x-protobuf"}
GRPC_CODES = {400: 3, 401: 16, 404: 5, 405: 12, 408: 4, 411: 3, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
"""The ``google.rpc.Status`` code of each HTTP status of the OTLP path (INVALID_ARGUMENT, UNAUTHENTICATED,
NOT_FOUND, UNIMPLEMENTED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE); UNKNOWN (2)
for any other."""
UNAUTHORIZED_HEADERS = ((b"WWW-Authenticate", b'Bearer realm="ingest"'),)

log = Logger()


def json_response(status: int, document: Any, headers: Headers = (), reason: str = "") -> Response:
    body = ujson.dumps(document, escape_forward_slashes=False).encode("utf-8")
    return Response(status, body, JSON_TYPE + headers, False, reason)


DISK_RETRY_AFTER = b"10"
"""Retry-After of a refusal for low disk space: room comes back from an operator or retention, not
from the next flush."""


class DiskHeadroom(Protocol):
    """What the routes read of `ingest.headroom.Headroom`."""

    def problem(self) -> str | None: ...

    def figures(self) -> dict[str, Any] | None: ...


def buffer_full() -> IngestError:
    return IngestError(
        503, "buffer full", "the service is saturated; retry later", headers=((b"Retry-After", RETRY_AFTER),)
    )


class SinkView(Protocol):
    """What the routes show of the NATS sink (`ingest.sink.Sink`)."""

    def status(self) -> dict[str, Any]: ...

    def behind(self) -> str | None: ...


class Api:
    """The routes of the service.

    `storage_problem` says why storage is failing (None when it works);
    `max_body` is the limit on a body after decompression; `durable`, in
    durable mode, gives the Deferred that fires once a chunk is on disk;
    `tokens` and `limits` switch on authentication and rate limits;
    `headroom` (``--min-free``) refuses new samples while the disk is low and
    gives the disk figures.  `worker_figures`, in a worker of ``--workers``,
    gives every worker's last published snapshot, this one's included
    (`ingest.workers.StatsPublisher.figures`):
    ``/stats`` and ``/metrics`` then show all workers' figures merged.
    ``/health`` stays this worker's own, and says which worker it is.
    """

    def __init__(
        self,
        buffer: Buffer,
        parse_queue: ParseQueue,
        stats: Stats,
        clock: IReactorTime,
        storage_problem: Callable[[], str | None],
        max_body: int = 33554432,
        durable: Callable[[int], Deferred[None]] | None = None,
        tokens: Tokens | None = None,
        limits: ClientLimits | None = None,
        headroom: DiskHeadroom | None = None,
        sink: SinkView | None = None,
        worker_figures: Callable[[], Mapping[int, Mapping[str, Any]]] | None = None,
    ) -> None:
        self._buffer = buffer
        self._worker_figures = worker_figures
        self._headroom = headroom
        self._parse_queue = parse_queue
        self._stats = stats
        self._clock = clock
        self._storage_problem = storage_problem
        self._max_body = max_body
        self._durable = durable
        self._tokens = tokens
        self._limits = limits
        self._sink = sink
        self._routes: dict[bytes, dict[bytes, Endpoint]] = {
            b"/metrics": {b"POST": self.post_metrics, b"GET": self.get_metrics},
            b"/write": {b"POST": self.post_write},
            b"/api/v2/write": {b"POST": self.post_write_v2},
            b"/api/v1/write": {b"POST": self.post_agent},
            b"/api/v1/push": {b"POST": self.post_agent},
            OTLP_PATH: {b"POST": self.post_agent},
            b"/collectd": {b"POST": self.post_agent},
            b"/ping": {b"GET": self.get_ping},
            b"/health": {b"GET": self.get_health},
            b"/stats": {b"GET": self.get_stats},
        }
        self._allow = {path: ", ".join(_allowed(methods)).encode() for path, methods in self._routes.items()}
        self._labels = {path: path.decode() for path in self._routes}
        self._exposition = Exposition(self.snapshot, expected_answers(self._labels.values()))

    def set_tokens(self, tokens: Tokens | None) -> None:
        """Check the requests from now on against `tokens` (None: no authentication); a reload."""
        self._tokens = tokens

    def set_rate_limit(self, rate: float, burst: float) -> None:
        """Limit each client to `rate` samples a second, `burst` at once, from now on (0: no limit).

        A reload: the clients' buckets are kept (`ClientLimits.change`), or
        start full when there was no limit before.
        """
        if not rate:
            self._limits = None
        elif self._limits is None:
            self._limits = ClientLimits(rate, burst)
        else:
            self._limits.change(rate, burst, self._clock.seconds())

    def route_label(self, path: bytes) -> str:
        """The route a path counts under in the figures: the path itself, or ``other``."""
        return self._labels.get(path, "other")

    def check(self, method: bytes, path: bytes, headers: dict[bytes, bytes]) -> Endpoint:
        """Refuse a request from its head alone (401, 404, 405, 415), or return its endpoint."""
        methods = self._routes.get(path)
        if methods is None:
            raise IngestError(404, "not found", f"no such path: {path.decode('latin-1')[:100]}")
        try:
            if method not in methods and not (method == b"HEAD" and b"GET" in methods):
                raise IngestError(
                    405,
                    "method not allowed",
                    f"{path.decode()} takes {self._allow[path].decode()}",
                    headers=((b"Allow", self._allow[path]),),
                )
            if self._tokens is not None and path not in OPEN_PATHS:
                if self._tokens.identify(headers.get(b"authorization")) is None:
                    raise IngestError(
                        401,
                        "unauthorized",
                        "send Authorization: Bearer <token>",
                        headers=UNAUTHORIZED_HEADERS,
                    )
            if method == b"POST":
                body_format(path, headers)
        except IngestError as error:
            raise self.shape(path, headers, error) from None
        return methods[b"GET" if method == b"HEAD" else method]

    def shape(self, path: bytes, headers: dict[bytes, bytes], error: IngestError) -> IngestError:
        """`error` as its path answers it: on the OTLP path, a ``google.rpc.Status`` in the request's
        encoding (the OTLP specification's error body); elsewhere, as it is.  The channel asks too,
        for a framing error or a timeout met in a request."""
        if path != OTLP_PATH:
            return error
        is_json = _media_type(headers) == b"application/json"
        body = otlp.status_body(error.detail or error.error, GRPC_CODES.get(error.status, 2), is_json)
        content_type = ((b"Content-Type", OTLP_TYPES[OTLP_JSON if is_json else OTLP_PROTOBUF]),)
        return IngestError(
            error.status,
            error.error,
            error.detail,
            close=error.close,
            headers=content_type + error.headers,
            body=body,
        )

    def handle(self, request: Request) -> Response | Deferred[Response] | None:
        """Check and answer one complete request; raises `IngestError` for refusals known at once."""
        return self.check(request.method, request.path, request.headers)(request)

    # -- ingest ------------------------------------------------------------

    def post_metrics(self, request: Request) -> Response | Deferred[Response] | None:
        return self._ingest(request, metrics_format(request.headers.get(b"content-type")), 1)

    def post_write(self, request: Request) -> Response | Deferred[Response] | None:
        return self._ingest(request, LINE, _precision(request.query, PRECISIONS))

    def post_write_v2(self, request: Request) -> Response | Deferred[Response] | None:
        return self._ingest(request, LINE, _precision(request.query, V2_PRECISIONS))

    def post_agent(self, request: Request) -> Response | Deferred[Response] | None:
        """Remote write, OTLP/HTTP and collectd: an overload or a refusal known before decoding is
        answered in the path's own way (`shape`)."""
        try:
            return self._ingest(request, body_format(request.path, request.headers), 1)
        except IngestError as error:
            raise self.shape(request.path, request.headers, error) from None

    def _ingest(self, request: Request, kind: str, unit_ns: int) -> Response | Deferred[Response] | None:
        if self._buffer.full:
            self._stats.samples_rejected["buffer_full"] += 1
            raise buffer_full()
        if self._headroom is not None:
            problem = self._headroom.problem()
            if problem:  # refused before the disk is full: the last segment is never torn by ENOSPC
                self._stats.samples_rejected["disk_space_low"] += 1
                raise IngestError(
                    503,
                    "disk space low",
                    f"{problem}; retry later",
                    headers=((b"Retry-After", DISK_RETRY_AFTER),),
                )
        if self._durable is not None:
            problem = self._storage_problem()
            if problem:  # a durable ack cannot be given now: say so, rather than hold the client
                self._stats.samples_rejected["storage_failing"] += 1
                raise IngestError(
                    503,
                    "storage failing",
                    f"{problem}; retry later",
                    headers=((b"Retry-After", RETRY_AFTER),),
                )
        gzipped = kind != REMOTE_WRITE and is_gzip(request.headers.get(b"content-encoding"))
        job = Job(kind, request.body, int(request.received * 1e9), gzipped, self._max_body, unit_ns)
        outcome = self._parse_queue.decode_now(job)
        if outcome is not None:
            return self._store(outcome, kind, request)
        self._parse_queue.submit(job, partial(self._deliver, kind, request))
        return None

    def _deliver(self, kind: str, request: Request, outcome: Outcome) -> None:
        """The parse queue's callback: store the outcome and answer through ``request.respond``."""
        try:
            answer = self._store(outcome, kind, request)
        except Exception:
            request.respond(Failure())  # type: ignore[no-untyped-call]  # Twisted's Failure is not annotated
            return
        if isinstance(answer, Deferred):
            answer.addBoth(request.respond)
        else:
            request.respond(answer)

    def client(self, request: Request) -> str:
        """Who sent the request: its token's name when auth is on, else its peer address."""
        if self._tokens is not None:
            name = self._tokens.identify(request.headers.get(b"authorization"))
            if name is not None:
                return name
        return request.peer

    def _store(self, outcome: Outcome, kind: str, request: Request) -> Response | Deferred[Response]:
        """Buffer a decoded body and say what to answer; an error outcome is counted and answered.

        Both paths of a body come through here (the pool's, and inline with
        ``--threads 0``): the one place an `InternalError` is logged.
        """
        stats = self._stats
        if isinstance(outcome, IngestError):
            if isinstance(outcome, InternalError):
                log.critical(
                    "decoding the body of {method} {path} from {peer} failed; answered 500\n{trace}",
                    method=request.method.decode("latin-1"),
                    path=request.path.decode("latin-1"),
                    peer=request.peer,
                    trace=outcome.trace,
                )
            reason = (
                "invalid" if outcome.error == "invalid sample" else outcome.error.lower().replace(" ", "_")
            )
            stats.samples_rejected[reason] += 1
            return self._refuse(request, outcome)
        decoded: Decoded = outcome
        seq = None
        if decoded.accepted:
            # Room first: a request refused for want of room must not spend the client's allowance.
            if not self._buffer.fits(decoded.accepted):
                stats.samples_rejected["buffer_full"] += decoded.accepted
                return self._refuse(request, buffer_full())
            if self._limits is not None:
                wait = self._limits.take(self.client(request), decoded.accepted, self._clock.seconds())
                if wait:
                    stats.samples_rejected["rate_limited"] += decoded.accepted
                    retry = b"%d" % max(1, math.ceil(wait))
                    return self._refuse(
                        request,
                        IngestError(
                            # Prometheus drops a batch answered 429 unless told otherwise; it retries 503.
                            503 if kind == REMOTE_WRITE else 429,
                            "rate limited",
                            f"over {self._limits.rate:g} samples/s; retry in {retry.decode()} s",
                            headers=((b"Retry-After", retry),),
                        ),
                    )
            seq = self._buffer.add(decoded.data, decoded.accepted)
            assert seq is not None  # it fits: nothing ran on this thread since `fits`
        response = self._answer(decoded, kind)
        if seq is not None and self._durable is not None:
            return self._durable(seq).addCallback(lambda _: response)
        return response

    def _refuse(self, request: Request, error: IngestError) -> Response:
        return error_response(self.shape(request.path, request.headers, error))

    def _answer(self, decoded: Decoded, kind: str) -> Response:
        stats = self._stats
        stats.samples_accepted += decoded.accepted
        if decoded.rejected:
            stats.samples_rejected["invalid"] += decoded.rejected
        if decoded.skipped:
            for reason, count in (decoded.reasons or {"string_field": decoded.skipped}).items():
                stats.samples_skipped[reason] += count
        if kind in OTLP_TYPES:  # rejected points are reported in the answer's partial_success, with 200
            converted = Converted([], decoded.rejected, decoded.errors, decoded.reasons or {})
            body = otlp.response(converted, kind == OTLP_JSON)
            return Response(200, body, ((b"Content-Type", OTLP_TYPES[kind]),))
        if decoded.rejected:
            where = "line" if kind == LINE else "index"
            if kind == LINE or kind == COLLECTD:
                # A line or a value list may hold several samples: count them and the samples apart.
                unit = "line" if kind == LINE else "value list"
                units = unit if decoded.rejected == 1 else unit + "s"
                samples = "sample" if decoded.accepted == 1 else "samples"
                detail = f"{decoded.rejected} {units} rejected, {decoded.accepted} {samples} accepted"
            else:
                detail = f"{decoded.rejected} of {decoded.accepted + decoded.rejected} samples rejected"
            document: dict[str, Any] = {
                "error": "partial write",
                "detail": detail,
                "accepted": decoded.accepted,
                "rejected": decoded.rejected,
            }
            if kind == LINE:
                document["skipped"] = decoded.skipped
            document["errors"] = [{where: at, "error": reason} for at, reason in decoded.errors]
            return json_response(400, document, reason="partial write")
        if kind == LINE or kind == REMOTE_WRITE:
            skipped = ((b"X-Ingest-Skipped", b"%d" % decoded.skipped),) if decoded.skipped else ()
            return Response(204, b"", skipped)
        if kind == COLLECTD:  # collectd logs any status but 200 as an error
            return Response(200, b'{"accepted":%d}' % decoded.accepted, JSON_TYPE)
        return Response(202, b'{"accepted":%d}' % decoded.accepted, JSON_TYPE)

    # -- the service's own state -------------------------------------------

    def get_ping(self, request: Request) -> Response:
        return Response(204, b"", ((b"X-Influxdb-Version", INFLUXDB_VERSION),))

    def get_health(self, request: Request) -> Response:
        reasons = []
        problem = self._storage_problem()
        if problem:
            reasons.append(f"storage failing: {problem}")
        if self._buffer.full:
            reasons.append("buffer full")
        elif self._buffer.saturated:
            reasons.append("buffer saturated: reading from clients is paused until it drains")
        disk = None
        if self._headroom is not None:
            low = self._headroom.problem()
            if low:
                reasons.append(low)
            figures = self._headroom.figures()
            if figures is not None:
                disk = {key: figures[key] for key in ("free_bytes", "min_free_bytes", "segment_bytes")}
        buffer = {"depth": self._buffer.depth, "capacity": self._buffer.capacity}
        more: dict[str, Any] = {} if self._headroom is None else {"disk": disk}
        if self._stats.worker is not None:
            more["worker"] = self._stats.worker
        if self._sink is not None:
            more["sink"] = self._sink.status()
        if reasons:
            return json_response(503, {"status": "unhealthy", "reasons": reasons, "buffer": buffer, **more})
        behind = None if self._sink is None else self._sink.behind()
        if behind:  # the data is safe in the segments: healthy, but say so
            document = {"status": "degraded", "reasons": [behind], "version": __version__, "buffer": buffer}
            return json_response(200, {**document, **more})
        return json_response(200, {"status": "ok", "version": __version__, "buffer": buffer, **more})

    def snapshot(self) -> dict[str, Any]:
        """The figures of ``/stats`` and ``/metrics``: this process's, or with workers all workers'."""
        own = self.own_snapshot()
        if self._worker_figures is None or "worker" not in own:
            return own
        now = self._clock.seconds()
        return merge(own["worker"], {own["worker"]: {**own, WRITTEN_AT: now}, **self._worker_figures()}, now)

    def own_snapshot(self) -> dict[str, Any]:
        """This process's figures alone (what a worker publishes for the others)."""
        gauges = {
            "depth": self._buffer.depth,
            "high_mark": self._buffer.high_mark,
            "capacity": self._buffer.capacity,
            "parse_queue": self._parse_queue.queued,
        }
        snapshot = self._stats.snapshot(self._clock.seconds(), gauges)
        if self._headroom is not None:
            snapshot["disk"] = self._headroom.figures()
        if self._sink is not None:
            snapshot["sink"] = self._sink.status()
        return snapshot

    def get_stats(self, request: Request) -> Response:
        return json_response(200, self.snapshot())

    def get_metrics(self, request: Request) -> Response:
        return Response(200, self._exposition.render(), ((b"Content-Type", CONTENT_TYPE),))


ROUTE_SUCCESSES = {
    "/metrics": (200, 202),  # GET (a scrape), POST (ingestion)
    "/write": (204,),
    "/api/v2/write": (204,),
    "/api/v1/write": (204,),
    "/api/v1/push": (204,),
    OTLP_PATH.decode(): (200,),
    "/collectd": (200,),
    "/ping": (204,),
    "/health": (200,),
    "/stats": (200,),
}
"""The statuses of each route's successful answers."""


def expected_answers(routes: Iterable[str]) -> list[tuple[str, int]]:
    """Every ``(route, status)`` the figures may count: each route's successes, every error status for
    every route and for ``other`` (framing errors come before a route is known to be good)."""
    labels = [*routes, "other"]
    pairs = [(route, status) for route in labels for status in ROUTE_SUCCESSES.get(route, ())]
    return pairs + [(route, status) for route in labels for status in ERROR_STATUSES]


def body_format(path: bytes, headers: dict[bytes, bytes]) -> str:
    """The format of a POST's body, from its path and headers; raises 415 for one that is not read."""
    content_type = headers.get(b"content-type")
    if path in REMOTE_WRITE_PATHS:
        return remote_write_format(content_type, headers.get(b"content-encoding"))
    if path == b"/metrics":
        kind = metrics_format(content_type)
    elif path == OTLP_PATH:
        kind = otlp_format(content_type)
    elif path == b"/collectd":
        kind = collectd_format(content_type)
    else:
        kind = line_format(content_type)
    is_gzip(headers.get(b"content-encoding"))
    return kind


def _media_type(headers: dict[bytes, bytes]) -> bytes:
    return headers.get(b"content-type", b"").partition(b";")[0].strip().lower()


def _precision(query: bytes, precisions: dict[str, int]) -> int:
    """Nanoseconds per timestamp unit from the ``precision`` query parameter (default ns)."""
    values = parse_qs(query.decode("latin-1")).get("precision") if query else None
    if not values:
        return 1
    unit = precisions.get(values[-1])
    if unit is None:
        raise IngestError(400, "invalid precision", f"precision must be one of {', '.join(precisions)}")
    return unit


def _allowed(methods: Mapping[bytes, object]) -> list[str]:
    names = sorted(method.decode() for method in methods)
    return [*names, "HEAD"] if "GET" in names else names
