"""Routes: what each method and path does, and the JSON the client gets back.

The channel (`ingest.protocol`) asks `Api.check` about a request as soon as
its head is complete, so a wrong path, method or media type is refused
before its body is read (and before ``100 Continue`` is sent), and then
hands the whole request to `Api.handle`.

``POST /metrics`` sends the body to the parse queue, puts what it yields in
the buffer and answers ``202 {"accepted": N}``, or ``400`` with PRODUCT.md's
partial-write body when some samples were invalid (the valid ones are kept).
When the buffer has no room for a request's samples, none of them are kept
and the answer is ``503`` with ``Retry-After``.

Every error becomes ``{"error": ..., "detail": ...}`` in `error_response`,
which lives in `ingest.messages`: the one place that shapes error bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ujson
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ingest.bodies import Decoded, metrics_format
from ingest.buffer import Buffer
from ingest.errors import IngestError
from ingest.messages import JSON_TYPE, Request, Response, error_response
from ingest.pool import Outcome, ParseQueue
from ingest.stats import Stats

RETRY_AFTER = b"1"


def json_response(status: int, document: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
    body = ujson.dumps(document, escape_forward_slashes=False).encode("utf-8")
    return Response(status, body, JSON_TYPE + headers)


def buffer_full() -> IngestError:
    return IngestError(
        503, "buffer full", "the service is saturated; retry later", headers=((b"Retry-After", RETRY_AFTER),)
    )


class Api:
    """The routes of the service.

    `health` returns the reasons the service is unhealthy (empty when it is
    fine); the flusher supplies the storage side of it.
    """

    def __init__(
        self,
        buffer: Buffer,
        parse_queue: ParseQueue,
        stats: Stats,
        clock: IReactorTime,
        storage_problem: Callable[[], str | None],
    ) -> None:
        self._buffer = buffer
        self._parse_queue = parse_queue
        self._stats = stats
        self._clock = clock
        self._storage_problem = storage_problem
        self._routes: dict[bytes, dict[bytes, Callable[[Request], Response | Deferred[Response]]]] = {
            b"/metrics": {b"POST": self.post_metrics},
            b"/ping": {b"GET": self.get_ping},
            b"/health": {b"GET": self.get_health},
            b"/stats": {b"GET": self.get_stats},
        }
        self._allow = {path: ", ".join(_allowed(methods)).encode() for path, methods in self._routes.items()}

    def check(self, method: bytes, path: bytes, headers: dict[bytes, bytes]) -> None:
        """Refuse a request from its head alone: 404, 405, 415.  Returns None when it may proceed."""
        methods = self._routes.get(path)
        if methods is None:
            raise IngestError(404, "not found", f"no such path: {path.decode('latin-1')}")
        if method not in methods and not (method == b"HEAD" and b"GET" in methods):
            raise IngestError(
                405,
                "method not allowed",
                f"{path.decode('latin-1')} takes {self._allow[path].decode()}",
                headers=((b"Allow", self._allow[path]),),
            )
        if method == b"POST":
            metrics_format(headers.get(b"content-type"))
            encoding = headers.get(b"content-encoding")
            if encoding is not None and encoding.strip().lower() != b"identity":
                raise IngestError(415, "unsupported content encoding", "only identity is accepted")

    def handle(self, request: Request) -> Response | Deferred[Response]:
        """Answer one complete request; raises `IngestError` for refusals known at once."""
        self.check(request.method, request.path, request.headers)
        method = b"GET" if request.method == b"HEAD" else request.method
        return self._routes[request.path][method](request)

    def post_metrics(self, request: Request) -> Response | Deferred[Response]:
        if self._buffer.full:
            raise buffer_full()
        kind = metrics_format(request.headers.get(b"content-type"))
        now_ns = int(request.received * 1e9)
        decoded = self._parse_queue.submit((kind, request.body, now_ns))
        return decoded.addCallback(self._store)

    def _store(self, outcome: Outcome) -> Response:
        stats = self._stats
        if isinstance(outcome, IngestError):
            if outcome.error == "invalid sample":
                stats.samples_rejected += 1
            return error_response(outcome)
        decoded: Decoded = outcome
        if decoded.accepted and not self._buffer.add(decoded.data, decoded.accepted):
            return error_response(buffer_full())
        stats.samples_accepted += decoded.accepted
        stats.samples_rejected += decoded.rejected
        if decoded.rejected:
            return json_response(
                400,
                {
                    "error": "partial write",
                    "detail": f"{decoded.rejected} of {decoded.accepted + decoded.rejected} samples rejected",
                    "accepted": decoded.accepted,
                    "rejected": decoded.rejected,
                    "errors": [{"index": index, "error": reason} for index, reason in decoded.errors],
                },
            )
        return json_response(202, {"accepted": decoded.accepted})

    def get_ping(self, request: Request) -> Response:
        return Response(204)

    def get_health(self, request: Request) -> Response:
        reasons = []
        problem = self._storage_problem()
        if problem:
            reasons.append(f"storage failing: {problem}")
        if self._buffer.full:
            reasons.append("buffer full")
        buffer = {"depth": self._buffer.depth, "capacity": self._buffer.capacity}
        if reasons:
            return json_response(503, {"status": "unhealthy", "reasons": reasons, "buffer": buffer})
        return json_response(200, {"status": "ok", "buffer": buffer})

    def get_stats(self, request: Request) -> Response:
        snapshot = self._stats.snapshot(self._clock.seconds(), self._buffer.depth, self._buffer.capacity)
        snapshot["parse_queue"] = self._parse_queue.queued
        return json_response(200, snapshot)


def _allowed(methods: dict[bytes, object]) -> list[str]:
    names = sorted(method.decode() for method in methods)
    return [*names, "HEAD"] if "GET" in names else names
