"""The one exception family of ingest.

Every layer that rejects something raises `IngestError` carrying the HTTP
status, a short error name and a human detail.  The protocol turns it into
the JSON error body in one place (`messages.error_response`).  Imports nothing.
"""

from __future__ import annotations


class IngestError(Exception):
    """A rejection that the client is told about.

    `status` is the HTTP status to answer, `error` a short stable name
    (the JSON body's ``error``), `detail` a sentence for humans.  `close`
    says the connection cannot be trusted any more (framing errors) and
    must close after the answer.  `headers` are extra response headers
    (``Allow``, ``Retry-After``).  `body`, when given, is the answer's body
    in place of the JSON error, with its ``Content-Type`` among `headers`: a
    protocol that specifies its own error bodies (OTLP's ``google.rpc.Status``).
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        *,
        close: bool = False,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes | None = None,
    ) -> None:
        super().__init__(status, error, detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.close = close
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"IngestError({self.status}, {self.error!r}, {self.detail!r})"


def framing_error(status: int, error: str, detail: str = "") -> IngestError:
    """An error in the HTTP framing: the connection closes after the answer."""
    return IngestError(status, error, detail, close=True)


INTERNAL_ERROR = "internal error"
INTERNAL_DETAIL = "see the service log"


def internal_error() -> IngestError:
    """The answer to a request that met a bug: 500 in generic words.

    The client is told nothing of the bug: an exception's text can hold the
    service's internals or another request's data.  Whoever caught the bug
    logs it with its traceback.
    """
    return IngestError(500, INTERNAL_ERROR, INTERNAL_DETAIL)


class InternalError(IngestError):
    """A bug met in work done off the reactor thread, answered as `internal_error`.

    Code running in a thread pool must not log (Twisted's log observers are
    called on the reactor thread only), so it catches the unexpected
    exception and returns this instead; `trace`, the formatted traceback,
    is for the reactor side to log, once, and never for the client.
    """

    def __init__(self, trace: str) -> None:
        super().__init__(500, INTERNAL_ERROR, INTERNAL_DETAIL)
        self.trace = trace
