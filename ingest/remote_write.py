"""Prometheus remote write 1.0 bodies to storage lines.  Pure: no Twisted, no clock.

Owns the decoding of ``POST /api/v1/write`` bodies ("Prometheus Remote-Write 1.0" at prometheus.io):
a snappy *block* (not framed) compressed protobuf ``WriteRequest``, and its mapping to samples.
The caller has checked Content-Type and Content-Encoding; `decode` runs in the parse pool.

Messages.  No maintained Python package ships Prometheus' messages, so `messages` builds them from a
``FileDescriptorProto`` written here after prompb's ``types.proto`` and ``remote.proto`` (package
``prometheus``), in a descriptor pool of their own: ``WriteRequest{timeseries = 1, metadata = 3}``,
``TimeSeries{labels = 1, samples = 2, exemplars = 3, histograms = 4}``, ``Label{name, value}``,
``Sample{double value, int64 timestamp}``, ``Exemplar{labels, value, timestamp}`` and
``MetricMetadata{type, metric_family_name, help, unit}``.  ``Histogram`` is declared with no field:
native histograms are only counted (their fields are kept as unknown bytes).  Two more messages read
the same bytes for speed (see Cost): ``LabelKeyedWriteRequest``, whose series keep each label as its
encoded bytes and leave exemplars and histograms unread, and ``ExtrasWriteRequest``, whose series
hold only their exemplars and histograms.  Built on first use (0.3 ms) and cached.

Mapping (PRODUCT.md).  Each ``Sample`` of each series is one stored sample: ``name`` is the series'
``__name__`` label, ``tags`` its other labels in the order sent (Prometheus sorts them by name), the
timestamp milliseconds times 1,000,000.  Values are doubles and stored as JSON floats (``1.0``).
Not stored, and counted in `Converted.skipped` by reason, never an error: the staleness marker
(the NaN ``0x7ff0000000000002``, ``stale``), any other NaN (``nan``), +/-Inf (``infinity``),
exemplars (``exemplar``) and native histogram samples (``histogram``).  A request of metadata only
gives an empty `Converted`; metadata is not stored.

Decisions of ours (the spec is silent, or Prometheus never sends it):

- A label with an empty value is dropped, as Prometheus itself reads it (an empty value is no label).
- A series is rejected, all its float samples with it, when it has no ``__name__`` (or an empty one),
  a label name twice, or a name or tags that `ingest.sample` refuses (length, count, control
  characters); a sample is rejected alone when its timestamp is out of `ingest.sample`'s range.
  Rejected samples are counted in `Converted.rejected` and listed (the first `MAX_ERRORS`) in
  `Converted.errors` as ``(index, reason)``: the index counts every ``Sample`` of the request from
  0, series after series, skipped ones included.  A rejected sample that is also NaN or infinite
  counts as rejected, not skipped, when its series is rejected.  A rejected series' exemplars and
  histograms are counted as skipped, as anywhere else.
- The whole body must parse as a ``WriteRequest`` (metadata, exemplars and histograms included,
  and proto3's valid UTF-8 in every string), or it is 400, as Prometheus' own receiver answers.

Limits.  The snappy block's header declares its inflated length: a body declaring more than
``max_body`` bytes is refused (413, the connection closed) before anything is inflated, so a snappy
bomb costs nothing; a body whose data does not inflate to the declared length is 400.

Cost.  Parsing is upb's, in C, and cheap (0.2 us a sample for the three parses); the cost is in
Python's reading of upb's objects, each attribute read making a wrapper (0.1 to 0.2 us), and in the
per-series work: a series of four labels takes 1.8 us to parse and read its labels, 0.9 to check the
name and tags (`ingest.sample`'s rules) and 0.8 to encode them to JSON.  Prometheus sends each
series about once a request (a sample a scrape interval, a request a ``batch_send_deadline``), so
the per-series work is the bulk.  Hence ``LabelKeyedWriteRequest``: a series' labels are a tuple of
bytes, cheap to make, and the key of `_series_text`, a bounded LRU memo (`SERIES_CACHE_SIZE` label
sets, about 700 bytes each) of the storage line's text before its value and after its timestamp.
A label set seen before (Prometheus sends the same ones every scrape) costs a lookup; a new one its
``Label`` parses and the checks.  Exemplars and histograms are counted through
``ExtrasWriteRequest``, whose serialized size tells in one C call whether any series has one
(reading two empty fields of every series would cost 0.4 us a series).

Measured by `bench/micro_remote_write.py` on `tests/fixtures/remote_write.snappy` (a real
Prometheus 2.42 body: 377 series of one sample each, 351 stored, 26 NaN), against the JSON path for
the same 351 samples, in microseconds a stored sample (`timeit`, best of 5, median of 7 rounds, one
run on the 2-core development VM)::

    JSON path, the same samples as an array (bodies.decode_metrics)     3.26
    remote write, label sets not in the memo (a sender's first request) 6.30   x1.94
    remote write, label sets in the memo (every later request)          2.31   x0.71

The first version read every series through the spec's messages and remembered nothing: 7.65 in a
run where this module took 7.29 with an empty memo and 2.36 with a full one.  A sender with more
series than the memo holds pays the empty-memo figure on every request (an LRU over a cycle larger
than itself hits nothing).

The memo is module state that changes, which STYLE.md's rule 3 forbids for state that changes
behaviour; this one does not (it memoizes a pure function of its key, thread-safely: so is
`functools.lru_cache`), and it is the one way the figures above hold across requests.
"""

from __future__ import annotations

import collections
import functools
import struct
from typing import Any, NamedTuple

import cramjam
import ujson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from ingest.errors import IngestError
from ingest.sample import MAX_NS, MIN_NS, Converted, check_name, check_tags, check_timestamp

MAX_ERRORS = 100
SERIES_CACHE_SIZE = 16384
"""Label sets whose storage text `_series_text` remembers: about 11 MB when full."""

STALE_NAN = 0x7FF0000000000002
"""Prometheus' staleness marker: a NaN with this bit pattern ends a series."""
_STALE_BYTES = struct.pack("<Q", STALE_NAN)
_DOUBLE = struct.Struct("<d")

_NS_PER_MS = 1_000_000
_MIN_MS = -(-MIN_NS // _NS_PER_MS)
_MAX_MS = MAX_NS // _NS_PER_MS
_MAX_HEADER = 5
"""Bytes of snappy's varint length header: a 32-bit length takes at most five."""


class Messages(NamedTuple):
    """The message classes built by `messages`: remote write 1.0's, and the two reading views."""

    WriteRequest: Any
    TimeSeries: Any
    Label: Any
    Sample: Any
    Exemplar: Any
    MetricMetadata: Any
    Histogram: Any
    LabelKeyedWriteRequest: Any
    ExtrasWriteRequest: Any


_TYPE = descriptor_pb2.FieldDescriptorProto
_ONE = _TYPE.LABEL_OPTIONAL
_MANY = _TYPE.LABEL_REPEATED
_FIELDS: dict[str, list[tuple[str, int, int, int, str]]] = {
    # message: [(field, number, optional or repeated, type, message or enum type)]
    "WriteRequest": [
        ("timeseries", 1, _MANY, _TYPE.TYPE_MESSAGE, "TimeSeries"),
        ("metadata", 3, _MANY, _TYPE.TYPE_MESSAGE, "MetricMetadata"),
    ],
    "TimeSeries": [
        ("labels", 1, _MANY, _TYPE.TYPE_MESSAGE, "Label"),
        ("samples", 2, _MANY, _TYPE.TYPE_MESSAGE, "Sample"),
        ("exemplars", 3, _MANY, _TYPE.TYPE_MESSAGE, "Exemplar"),
        ("histograms", 4, _MANY, _TYPE.TYPE_MESSAGE, "Histogram"),
    ],
    "Label": [("name", 1, _ONE, _TYPE.TYPE_STRING, ""), ("value", 2, _ONE, _TYPE.TYPE_STRING, "")],
    "Sample": [("value", 1, _ONE, _TYPE.TYPE_DOUBLE, ""), ("timestamp", 2, _ONE, _TYPE.TYPE_INT64, "")],
    "Exemplar": [
        ("labels", 1, _MANY, _TYPE.TYPE_MESSAGE, "Label"),
        ("value", 2, _ONE, _TYPE.TYPE_DOUBLE, ""),
        ("timestamp", 3, _ONE, _TYPE.TYPE_INT64, ""),
    ],
    "MetricMetadata": [
        ("type", 1, _ONE, _TYPE.TYPE_ENUM, "MetricMetadata.MetricType"),
        ("metric_family_name", 2, _ONE, _TYPE.TYPE_STRING, ""),
        ("help", 4, _ONE, _TYPE.TYPE_STRING, ""),
        ("unit", 5, _ONE, _TYPE.TYPE_STRING, ""),
    ],
    "Histogram": [],
    # The reading views: the same field numbers, so the same bytes parse.
    "LabelKeyedWriteRequest": [("timeseries", 1, _MANY, _TYPE.TYPE_MESSAGE, "LabelKeyedTimeSeries")],
    "LabelKeyedTimeSeries": [
        ("labels", 1, _MANY, _TYPE.TYPE_BYTES, ""),
        ("samples", 2, _MANY, _TYPE.TYPE_MESSAGE, "Sample"),
    ],
    "ExtrasWriteRequest": [("timeseries", 1, _MANY, _TYPE.TYPE_MESSAGE, "ExtrasTimeSeries")],
    "ExtrasTimeSeries": [
        ("exemplars", 3, _MANY, _TYPE.TYPE_BYTES, ""),
        ("histograms", 4, _MANY, _TYPE.TYPE_BYTES, ""),
    ],
}
_METRIC_TYPES = ("UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET")


def file_descriptor() -> Any:
    """The messages of `messages` as a ``FileDescriptorProto`` (proto3, package ``prometheus``)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="ingest/prometheus_remote_write.proto", package="prometheus", syntax="proto3"
    )
    for message_name, fields in _FIELDS.items():
        message = file.message_type.add(name=message_name)
        for field_name, number, label, kind, type_name in fields:
            field = message.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = f".prometheus.{type_name}"
        if message_name == "MetricMetadata":
            enum = message.enum_type.add(name="MetricType")
            for number, value_name in enumerate(_METRIC_TYPES):
                enum.value.add(name=value_name, number=number)
    return file


@functools.cache
def messages() -> Messages:
    """The message classes, built on the first call and cached (in a pool of their own: no clash)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    return Messages(
        *(
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
            for name in Messages._fields
        )
    )


def decode(body: bytes, max_body: int) -> Converted:
    """The samples of one remote-write body: snappy-block-compressed protobuf ``WriteRequest``.

    Raises `IngestError`: 413 ``body too large`` (closing the connection) when the snappy header
    declares more than `max_body` bytes, 400 ``malformed snappy`` when the body is not a snappy
    block of the length it declares, 400 ``malformed remote write`` when the inflated bytes are not
    a ``WriteRequest``.  Samples that cannot be stored are data in the `Converted`, never raised.
    """
    data = inflate(body, max_body)
    classes = messages()
    try:
        classes.WriteRequest.FromString(data)  # the check: the views below skip what they do not read
        request = classes.LabelKeyedWriteRequest.FromString(data)
        extras = classes.ExtrasWriteRequest.FromString(data)
    except DecodeError as error:
        raise IngestError(400, "malformed remote write", f"not a WriteRequest: {error}") from None
    skipped = _extras(extras)
    return _convert(request.timeseries, skipped)


def inflate(body: bytes, max_body: int) -> bytes:
    """Inflate a snappy block of at most `max_body` bytes, reading its declared length first.

    Raises 413 (closing the connection) past `max_body`, before inflating; 400 for anything that is
    not a snappy block inflating to exactly its declared length.
    """
    declared = 0
    for position, byte in enumerate(body[:_MAX_HEADER]):
        declared |= (byte & 0x7F) << (7 * position)
        if byte < 0x80:
            break
    else:
        raise IngestError(400, "malformed snappy", "no snappy block length header")
    if declared > max_body:
        raise IngestError(413, "body too large", f"over {max_body} bytes after decompression", close=True)
    try:
        data = bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as error:
        raise IngestError(400, "malformed snappy", str(error)) from None
    if len(data) != declared:
        raise IngestError(400, "malformed snappy", f"declares {declared} bytes and inflates to {len(data)}")
    return data


def _extras(extras: Any) -> dict[str, int]:
    """The skip counts of exemplars and histograms; `extras` is an ``ExtrasWriteRequest``.

    Its serialized size tells whether any series has one: a series with neither takes two bytes
    (its field's tag and a zero length) once the other fields, unknown to it, are dropped.
    """
    series = extras.timeseries
    extras.DiscardUnknownFields()
    if extras.ByteSize() == 2 * len(series):
        return {}
    exemplars = sum(len(one.exemplars) for one in series)
    histograms = sum(len(one.histograms) for one in series)
    counts = {"exemplar": exemplars, "histogram": histograms}
    return {reason: count for reason, count in counts.items() if count}


def _convert(timeseries: Any, skipped: dict[str, int]) -> Converted:
    """Map the series of a ``LabelKeyedWriteRequest`` to storage lines (see the module docstring)."""
    lines: list[str] = []
    append = lines.append
    dumps = ujson.dumps
    errors: list[tuple[int, str]] = []
    rejected = 0
    index = 0
    for series in timeseries:
        samples = series.samples
        if not samples:
            continue
        try:
            head, tail = _series_text(tuple(series.labels))
        except IngestError as error:
            count = len(samples)
            rejected += count
            errors.extend((index + i, error.detail) for i in range(min(count, MAX_ERRORS - len(errors))))
            index += count
            continue
        for sample in samples:
            value = sample.value
            ms = sample.timestamp
            if value - value == 0.0 and _MIN_MS <= ms <= _MAX_MS:
                append(f'{head}{dumps(value)},"timestamp":{ms * _NS_PER_MS}{tail}')
            elif value - value != 0.0:
                reason = _skip_reason(value)
                skipped[reason] = skipped.get(reason, 0) + 1
            else:
                rejected += 1
                if len(errors) < MAX_ERRORS:
                    errors.append((index, _timestamp_error(ms)))
            index += 1
    return Converted(lines, rejected, errors, skipped)


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _series_text(labels: tuple[bytes, ...]) -> tuple[str, str]:
    """A series' storage line around its value and timestamp: ``('{"name":N,"value":', ',"tags":T}')``.

    `labels` are the series' labels, each an encoded ``Label``.  Raises `IngestError` (400 ``invalid
    sample``) for a series that cannot be stored, and is then not remembered.
    """
    label = messages().Label
    try:
        pairs = [(decoded.name, decoded.value) for decoded in map(label.FromString, labels)]
    except DecodeError as error:  # not reached: `decode` parsed the body whole first
        raise IngestError(400, "malformed remote write", f"not a WriteRequest: {error}") from None
    tags = dict(pairs)
    if len(tags) != len(pairs):
        counts = collections.Counter(name for name, _ in pairs)
        duplicate = next(name for name, _ in pairs if counts[name] > 1)
        raise IngestError(400, "invalid sample", f"label {duplicate[:64]!r} given twice")
    name = tags.pop("__name__", "")
    if not name:
        raise IngestError(400, "invalid sample", "series without a __name__ label")
    check_name(name)
    if "" in tags.values():
        tags = {key: value for key, value in tags.items() if value}
    if tags:
        check_tags(tags)
    return f'{{"name":{ujson.dumps(name)},"value":', f',"tags":{ujson.dumps(tags)}}}'


def _skip_reason(value: float) -> str:
    """Why a non-finite value is not stored: ``stale``, ``nan`` or ``infinity``."""
    if value == value:
        return "infinity"
    return "stale" if _DOUBLE.pack(value) == _STALE_BYTES else "nan"


def _timestamp_error(ms: int) -> str:
    """The reason a timestamp out of range is rejected, in `ingest.sample`'s words."""
    try:
        check_timestamp(ms * _NS_PER_MS)
    except IngestError as error:
        return error.detail
    return "timestamp: out of range"  # not reached: the caller found it out of range
