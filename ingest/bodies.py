"""Request bodies to storage-ready samples.  Pure; runs in the parse pool.

`decode_jobs` is the pool's entry point: one call carries every body that
arrived in one reactor turn, so one thread hop serves many requests.  It
never raises: each job's outcome is a `Decoded` or the `IngestError` that
rejects the whole body.  The work in a job (ujson parse, validation, storage
encoding) holds the GIL throughout; the pool buys the reactor turns between
batches, not parallelism.

Formats of ``POST /metrics``, chosen by `metrics_format` from Content-Type:

- ``application/json``: one sample object, or an array of them;
- ``application/x-ndjson`` (also ``application/ndjson``, ``application/jsonl``,
  ``application/x-jsonlines``): one object per line, blank lines skipped;
- no Content-Type, ``text/plain`` or ``application/x-www-form-urlencoded``
  (what ``curl -d`` sends): JSON if the whole body parses as JSON, else NDJSON;
- anything else: 415.

A single object that is invalid rejects the request (400 ``invalid
sample``).  In an array or NDJSON, the valid samples are kept and the
invalid ones reported by their 0-based index among the body's samples
(for NDJSON, its non-blank lines), at most `MAX_ERRORS` of them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import ujson

from ingest.errors import IngestError
from ingest.sample import Sample, encode, from_json

MAX_ERRORS = 100

JSON = "json"
NDJSON = "ndjson"
SNIFF = "sniff"

_FORMATS = {
    b"application/json": JSON,
    b"application/x-ndjson": NDJSON,
    b"application/ndjson": NDJSON,
    b"application/jsonl": NDJSON,
    b"application/x-jsonlines": NDJSON,
    b"text/plain": SNIFF,
    b"application/x-www-form-urlencoded": SNIFF,
}


class Decoded(NamedTuple):
    """The outcome of one body.

    `data` holds the accepted samples in storage form, `accepted` their
    count; `rejected` counts the invalid ones and `errors` lists the first
    `MAX_ERRORS` of them as ``(index, reason)``.
    """

    data: bytes
    accepted: int
    rejected: int
    errors: list[tuple[int, str]]


Job = tuple[str, bytes, int]
"""(format, body, receipt time in ns): one body for `decode_jobs`."""


def metrics_format(content_type: bytes | None) -> str:
    """The body format for a Content-Type value; raises 415 for one we do not read."""
    if content_type is None:
        return SNIFF
    media_type = content_type.partition(b";")[0].strip().lower()
    kind = _FORMATS.get(media_type)
    if kind is None:
        raise IngestError(
            415,
            "unsupported media type",
            "POST /metrics takes application/json or application/x-ndjson",
        )
    return kind


def decode_jobs(jobs: list[Job]) -> list[Decoded | IngestError]:
    """Decode every job; the pool entry point.  Never raises."""
    outcomes: list[Decoded | IngestError] = []
    for kind, body, now_ns in jobs:
        try:
            outcomes.append(decode_metrics(kind, body, now_ns))
        except IngestError as error:
            outcomes.append(error)
    return outcomes


def decode_metrics(kind: str, body: bytes, now_ns: int) -> Decoded:
    """Decode one ``POST /metrics`` body; raises `IngestError` (400) when nothing in it is usable."""
    if not body.strip():
        raise IngestError(400, "empty body", "expected JSON samples")
    if kind == NDJSON:
        return _decode_lines(body, now_ns)
    try:
        document = ujson.loads(body)
    except ValueError as exc:
        if kind == SNIFF and b"\n" in body.strip():
            return _decode_lines(body, now_ns)
        raise IngestError(400, "malformed JSON", str(exc)) from None
    if type(document) is list:
        return _decode_values(document, now_ns)
    if type(document) is dict:
        sample = from_json(document, now_ns)
        return Decoded(encode([sample]), 1, 0, [])
    raise IngestError(400, "invalid sample", "expected an object or an array of objects")


def _decode_values(values: list[Any], now_ns: int) -> Decoded:
    samples: list[Sample] = []
    errors: list[tuple[int, str]] = []
    rejected = 0
    for index, value in enumerate(values):
        try:
            samples.append(from_json(value, now_ns))
        except IngestError as error:
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((index, error.detail))
    return Decoded(encode(samples) if samples else b"", len(samples), rejected, errors)


def _decode_lines(body: bytes, now_ns: int) -> Decoded:
    samples: list[Sample] = []
    errors: list[tuple[int, str]] = []
    rejected = 0
    index = 0
    loads = ujson.loads
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        try:
            try:
                value = loads(line)
            except ValueError as exc:
                raise IngestError(400, "malformed JSON", f"malformed JSON: {exc}") from None
            samples.append(from_json(value, now_ns))
        except IngestError as error:
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((index, error.detail))
        index += 1
    return Decoded(encode(samples) if samples else b"", len(samples), rejected, errors)
