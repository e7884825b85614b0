"""The values passed between layers: one parsed request, one response.

Plain immutable records (named tuples: cheap to build on the hot path) so
that framing, routes and the channel agree on shapes without importing one
another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import ujson

from ingest.errors import IngestError

Headers = tuple[tuple[bytes, bytes], ...]


class Request(NamedTuple):
    """One complete request as the framing layer delivered it.

    `headers` maps lower-cased field names to values (repeated fields other
    than the framing ones are joined with ``", "``).  `body` is the message
    body after transfer decoding (chunked), before content decoding.
    `received` is the reactor's time when the request line arrived, in
    seconds.  `respond` answers the request later, for an endpoint that
    returns None instead of a `Response` or a Deferred: the hot path's way,
    without a Deferred's cost.  It takes a `Response`, an `IngestError` or
    a `Failure`.
    """

    method: bytes
    path: bytes
    query: bytes
    version: bytes
    headers: dict[bytes, bytes]
    body: bytes
    received: float
    peer: str
    respond: Callable[[Any], None]


class Response(NamedTuple):
    """One response: status, body, extra headers, whether to close after it.

    `reason` is the short error name of an error answer, for the log.
    """

    status: int
    body: bytes = b""
    headers: Headers = ()
    close: bool = False
    reason: str = ""


JSON_TYPE = ((b"Content-Type", b"application/json"),)

ERROR_STATUSES = (400, 401, 404, 405, 408, 411, 413, 414, 415, 417, 429, 431, 500, 503, 505)
"""Every error status ingest answers (those `ingest.http11` has a status line for); each route's
successes are the routes' to say."""


def error_response(error: IngestError) -> Response:
    """The one place that turns an `IngestError` into its answer: ``{"error": ..., "detail": ...}``,
    or the body the error carries (a protocol's own error body, its type among its headers)."""
    if error.body is not None:
        return Response(error.status, error.body, error.headers, error.close, error.error)
    body = ujson.dumps({"error": error.error, "detail": error.detail}, escape_forward_slashes=False)
    return Response(error.status, body.encode("utf-8"), JSON_TYPE + error.headers, error.close, error.error)
