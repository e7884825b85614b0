"""Request bodies to storage-ready samples.  Pure; runs in the parse pool.

`decode_jobs` is the pool's entry point: one call carries every body that
arrived in one reactor turn, so one thread hop serves many requests.  It
never raises: each job's outcome is a `Decoded` or the `IngestError` that
rejects the whole body.  A bug met in one body (any other exception) fails
that body only, as an `InternalError` carrying the traceback, which the
reactor side logs: nothing here logs, since this runs in a pool thread.

The work in a job (gunzip, msgspec, ujson or line-protocol parse, validation,
storage encoding) holds the GIL throughout; the pool buys the reactor
turns between batches, not parallelism.

Content-Encoding ``gzip`` is inflated here, at most ``max_body + 1`` bytes
of output: a gzip bomb costs one limit's worth of memory and gets 413.

Formats of ``POST /metrics``, chosen by `metrics_format` from Content-Type:

- ``application/json``: one sample object, or an array of them;
- ``application/x-ndjson`` (also ``application/ndjson``, ``application/jsonl``,
  ``application/x-jsonlines``): one object per line, blank lines skipped;
- no Content-Type, ``text/plain`` or ``application/x-www-form-urlencoded``
  (what ``curl -d`` sends): JSON if the whole body parses as JSON, else NDJSON;
- anything else: 415.

``POST /write`` and ``/api/v2/write`` take InfluxDB line protocol
(`ingest.lineproto`) whatever their Content-Type says, except a JSON type,
which is a client sending to the wrong path: 415.

A single object that is invalid rejects the request (400 ``invalid
sample``).  In an array or NDJSON, the valid samples are kept and the
invalid ones reported by their 0-based index among the body's samples
(for NDJSON, its non-blank lines), at most `MAX_ERRORS` of them; line
protocol reports 1-based line numbers.
"""

from __future__ import annotations

import traceback
import zlib
from typing import Any, NamedTuple

import msgspec
import ujson

from ingest import collectd, lineproto, otlp, remote_write
from ingest.errors import IngestError, InternalError
from ingest.sample import Converted, JsonSample, LineEncoder, plain, plain_lines, storage_line

MAX_ERRORS = 100

UJSON = "ujson"
"""The JSON sample path by ujson: decoded to dicts, checked in Python (`sample.LineEncoder.line`)."""
MSGSPEC = "msgspec"
"""The JSON sample path by msgspec: decoded into `sample.JsonSample`, most rules checked in C.

Anything msgspec refuses (and any `IngestError` of the checks left to Python) sends the whole
document, or for NDJSON the line, through the ujson path, which gives today's result and message:
errors are the rare path, and one set of rules writes their messages.  Both paths give the same
`Decoded` or the same `IngestError` for any body (a property test in tests/test_bodies.py).
"""
JSON_PARSERS = (UJSON, MSGSPEC)
DEFAULT_PARSER = MSGSPEC
"""msgspec: 1.6x ujson's speed a sample on batches of one series, 1.2x on distinct samples
(`bench/micro_msgspec.py`, BENCHMARKS.md, issue 13)."""

JSON = "json"
NDJSON = "ndjson"
SNIFF = "sniff"
LINE = "line"
REMOTE_WRITE = "remote_write"
OTLP_PROTOBUF = "otlp_protobuf"
OTLP_JSON = "otlp_json"
COLLECTD = "collectd"

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
    `MAX_ERRORS` of them as ``(index or line, reason)``; `skipped` counts
    values that are not samples, and `reasons` says why by reason, when
    there is another reason than line protocol's string fields (the agents'
    formats: NaN, infinities, exemplars...).
    """

    data: bytes
    accepted: int
    rejected: int
    errors: list[tuple[int, str]]
    skipped: int = 0
    reasons: dict[str, int] | None = None


class Job(NamedTuple):
    """One body for `decode_jobs`.

    `kind` is `JSON`, `NDJSON`, `SNIFF` or `LINE`; `now_ns` the receipt
    time that stands in for missing timestamps; `gzip` whether the body is
    gzip-encoded; `max_body` the limit after decompression; `unit_ns` the
    line-protocol timestamp unit; `parser` the JSON sample path (`UJSON` or
    `MSGSPEC`) for ``POST /metrics`` bodies.
    """

    kind: str
    body: bytes
    now_ns: int
    gzip: bool = False
    max_body: int = 33554432
    unit_ns: int = 1
    parser: str = DEFAULT_PARSER


_JSON_TYPES = frozenset(media for media, kind in _FORMATS.items() if kind in (JSON, NDJSON))
_ENCODINGS = {b"identity": False, b"gzip": True, b"x-gzip": True}


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


def line_format(content_type: bytes | None) -> str:
    """The write endpoints read line protocol; a JSON Content-Type gets 415."""
    if content_type is not None and content_type.partition(b";")[0].strip().lower() in _JSON_TYPES:
        raise IngestError(
            415, "unsupported media type", "this path takes line protocol; JSON goes to /metrics"
        )
    return LINE


_PROTOBUF = b"application/x-protobuf"
_REMOTE_WRITE_2 = b"io.prometheus.write.v2.request"


def remote_write_format(content_type: bytes | None, content_encoding: bytes | None) -> str:
    """Remote write 1.0: snappy protobuf, which a missing header also means (as Prometheus' own
    receiver takes it); another type or encoding, and remote write 2.0's type, get 415."""
    if content_type is not None:
        media_type, _, parameters = content_type.lower().partition(b";")
        if media_type.strip() != _PROTOBUF:
            raise IngestError(415, "unsupported media type", "remote write takes application/x-protobuf")
        if _REMOTE_WRITE_2 in parameters:
            raise IngestError(
                415, "unsupported media type", "remote write 2.0 is not supported; send remote write 1.0"
            )
    if content_encoding is not None and content_encoding.strip().lower() != b"snappy":
        raise IngestError(415, "unsupported content encoding", "remote write takes snappy")
    return REMOTE_WRITE


def otlp_format(content_type: bytes | None) -> str:
    """OTLP/HTTP: protobuf or OTLP/JSON, by Content-Type; anything else gets 415."""
    media_type = b"" if content_type is None else content_type.partition(b";")[0].strip().lower()
    if media_type == _PROTOBUF:
        return OTLP_PROTOBUF
    if media_type == b"application/json":
        return OTLP_JSON
    raise IngestError(
        415, "unsupported media type", "OTLP/HTTP takes application/x-protobuf or application/json"
    )


def collectd_format(content_type: bytes | None) -> str:
    """collectd's write_http sends application/json; no Content-Type is read as JSON too."""
    if content_type is not None and content_type.partition(b";")[0].strip().lower() != b"application/json":
        raise IngestError(415, "unsupported media type", "collectd's write_http sends application/json")
    return COLLECTD


def is_gzip(content_encoding: bytes | None) -> bool:
    """Whether the body is gzip-encoded; raises 415 for an encoding other than gzip or identity."""
    if content_encoding is None:
        return False
    gzipped = _ENCODINGS.get(content_encoding.strip().lower())
    if gzipped is None:
        raise IngestError(415, "unsupported content encoding", "gzip and identity are accepted")
    return gzipped


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip data (one or more members), producing at most ``limit + 1`` bytes.

    Raises 413 (closing the connection) past `limit`, 400 for data that is
    not gzip or is cut short.
    """
    pieces: list[bytes] = []
    size = 0
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            piece = inflater.decompress(data, limit - size + 1)
            size += len(piece)
            if size > limit:
                raise IngestError(
                    413, "body too large", f"over {limit} bytes after decompression", close=True
                )
            pieces.append(piece)
            if not inflater.eof:
                raise IngestError(400, "malformed gzip", "the gzip stream ends early")
            data = inflater.unused_data
            if not data.strip(b"\0"):
                return b"".join(pieces)
    except zlib.error as error:
        raise IngestError(400, "malformed gzip", str(error)) from None


def decode_jobs(jobs: list[Job]) -> list[Decoded | IngestError]:
    """Decode every job; the pool entry point.  Never raises (but for `BaseException`s).

    One outcome per job, in order: its `Decoded`, the `IngestError` that
    rejects it, or, for any other exception (a bug), an `InternalError`
    holding the traceback, so that a bug in one body fails only that body.
    """
    outcomes: list[Decoded | IngestError] = []
    for job in jobs:
        try:
            outcomes.append(decode_job(job))
        except IngestError as error:
            outcomes.append(error)
        except Exception:
            outcomes.append(InternalError(traceback.format_exc()))
    return outcomes


def decode_job(job: Job) -> Decoded:
    """Decode one body of any format; raises `IngestError` when nothing in it is usable."""
    if job.kind == REMOTE_WRITE:  # snappy, inflated under the limit by the decoder
        return _converted(remote_write.decode(job.body, job.max_body))
    body = gunzip(job.body, job.max_body) if job.gzip else job.body
    if job.kind == LINE:
        parsed = lineproto.parse(body, job.unit_ns, job.now_ns)
        data = _lines(parsed.lines) if parsed.lines else b""
        return Decoded(data, len(parsed.lines), parsed.rejected, parsed.errors, parsed.skipped)
    if job.kind == OTLP_PROTOBUF or job.kind == OTLP_JSON:
        return _converted(otlp.decode(body, job.kind == OTLP_JSON, job.now_ns))
    if job.kind == COLLECTD:
        return _converted(collectd.decode(body, job.now_ns))
    return decode_metrics(job.kind, body, job.now_ns, job.parser)


def _converted(converted: Converted) -> Decoded:
    lines, rejected, errors, skipped = converted
    data = _lines(lines) if lines else b""
    return Decoded(data, len(lines), rejected, errors[:MAX_ERRORS], sum(skipped.values()), skipped)


_DOCUMENT = msgspec.json.Decoder(list[JsonSample] | JsonSample)
_SAMPLE = msgspec.json.Decoder(JsonSample)


def decode_metrics(kind: str, body: bytes, now_ns: int, parser: str = DEFAULT_PARSER) -> Decoded:
    """Decode one ``POST /metrics`` body; raises `IngestError` (400) when nothing in it is usable.

    `parser` is `UJSON` or `MSGSPEC`: the same outcome either way, at another cost.
    """
    if not body.strip():
        raise IngestError(400, "empty body", "expected JSON samples")
    if kind == NDJSON:
        return _decode_lines(body, now_ns, parser == MSGSPEC)
    if parser == MSGSPEC:
        decoded = _decode_document(body, now_ns)
        if decoded is not None:
            return decoded
    try:
        document = ujson.loads(body)
    except ValueError as exc:
        if kind == SNIFF and b"\n" in body.strip():
            return _decode_lines(body, now_ns, parser == MSGSPEC)
        raise IngestError(400, "malformed JSON", str(exc)) from None
    if type(document) is list:
        return _decode_values(document, now_ns)
    if type(document) is dict:
        return Decoded(_lines([storage_line(document, now_ns)]), 1, 0, [])
    raise IngestError(400, "invalid sample", "expected an object or an array of objects")


def _decode_document(body: bytes, now_ns: int) -> Decoded | None:
    """A JSON document of valid samples by msgspec; None when anything in it is refused (or is not
    JSON), for the ujson path to judge the whole body and give its messages and indexes.

    A `sample.plain` body is encoded by msgspec in one call (`sample.plain_lines`), at about twice
    the speed of the per-sample path (BENCHMARKS.md, issue 13)."""
    try:
        samples = _json_samples(body)
        if samples and plain(body):
            data = plain_lines(samples, now_ns)
            if data is not None:
                return Decoded(data, len(samples), 0, [])
            samples = _json_samples(body)  # their timestamps were set in place
        line = LineEncoder(now_ns).sample_line
        lines = [line(sample) for sample in samples]
    except (msgspec.DecodeError, IngestError):
        return None
    return Decoded(_lines(lines) if lines else b"", len(lines), 0, [])


def _json_samples(body: bytes) -> list[JsonSample]:
    document = _DOCUMENT.decode(body)
    return [document] if isinstance(document, JsonSample) else document


def _decode_values(values: list[Any], now_ns: int) -> Decoded:
    lines: list[str] = []
    errors: list[tuple[int, str]] = []
    rejected = 0
    line = LineEncoder(now_ns).line
    for index, value in enumerate(values):
        try:
            lines.append(line(value))
        except IngestError as error:
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((index, error.detail))
    return Decoded(_lines(lines) if lines else b"", len(lines), rejected, errors)


def _decode_lines(body: bytes, now_ns: int, by_msgspec: bool) -> Decoded:
    """NDJSON: each non-blank line by msgspec first when `by_msgspec`, and by ujson when msgspec
    refuses it, for ujson's result and message."""
    lines: list[str] = []
    errors: list[tuple[int, str]] = []
    rejected = 0
    index = 0
    loads = ujson.loads
    encoder = LineEncoder(now_ns)
    encode_line = encoder.line
    sample_line = encoder.sample_line
    decode_sample = _SAMPLE.decode
    for line in body.split(b"\n"):
        if not line.strip():
            continue
        if by_msgspec:
            try:
                lines.append(sample_line(decode_sample(line)))
            except (msgspec.DecodeError, IngestError):
                pass
            else:
                index += 1
                continue
        try:
            try:
                value = loads(line)
            except ValueError as exc:
                raise IngestError(400, "malformed JSON", f"malformed JSON: {exc}") from None
            lines.append(encode_line(value))
        except IngestError as error:
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((index, error.detail))
        index += 1
    return Decoded(_lines(lines) if lines else b"", len(lines), rejected, errors)


def _lines(lines: list[str]) -> bytes:
    """Storage lines joined, each ending in a newline."""
    return ("\n".join(lines) + "\n").encode("utf-8")
