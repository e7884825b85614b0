"""PLACEHOLDER on branch `wiring` only: the `otlp` branch replaces this file with the real decoder.

On a merge conflict, keep the other side (the real module).  Never merged to main as it is.
"""

from __future__ import annotations

from ingest.errors import IngestError
from ingest.sample import Converted


def decode(body: bytes, is_json: bool, now_ns: int) -> Converted:
    raise IngestError(501, "not implemented", "otlp placeholder")


def response(converted: Converted, is_json: bool) -> bytes:
    return b""


def status_body(message: str, code: int, is_json: bool) -> bytes:
    return b""
