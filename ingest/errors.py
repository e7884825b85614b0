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
    (``Allow``, ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        *,
        close: bool = False,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(status, error, detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.close = close
        self.headers = headers

    def __repr__(self) -> str:
        return f"IngestError({self.status}, {self.error!r}, {self.detail!r})"


def framing_error(status: int, error: str, detail: str = "") -> IngestError:
    """An error in the HTTP framing: the connection closes after the answer."""
    return IngestError(status, error, detail, close=True)
