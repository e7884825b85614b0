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
native histograms are only counted (their fields are kept as unknown bytes).  One more message
reads the same bytes for speed (see Cost): ``EncodedWriteRequest``, whose series are left as their
encoded bytes.  Built on first use (0.3 ms) and cached.

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

Cost.  Parsing is upb's, in C, and cheap (0.15 us a series to parse the whole ``WriteRequest``);
the cost is in Python's reading of upb's objects, each attribute read making a wrapper (0.1 to 0.2
us: reading a series' labels and its sample through them took 1.3 us of the 2.2 a series cost),
and in the per-series work: a series of four labels takes 1.8 us to parse and read its labels, 0.7
to check the name and tags (`ingest.sample`'s rules) and 1.0 to encode them to JSON.  Prometheus
sends each series about once a request (a sample a scrape interval, a request a
``batch_send_deadline``), so the per-series work is the bulk.  Hence:

- the labels' bytes are the key of `_series_text`, a bounded LRU memo (`SERIES_CACHE_SIZE` label
  sets, about 700 bytes each) of the storage line's text before its value and after its timestamp:
  a label set seen before (Prometheus sends the same ones every scrape) costs a lookup; a new one
  its parse and the checks;
- the body is parsed whole once, as the check, and read through ``EncodedWriteRequest``: a series
  as Prometheus writes it (its fields in number order: labels, samples, exemplars, histograms) is
  read byte by byte in `_convert` (0.3 us a series to find where its labels end);
- a sample of the two shapes Prometheus writes (``value`` then ``timestamp``, or ``timestamp``
  alone: proto3 leaves out a 0.0 value, and most counters are 0) is read with `struct`, and its
  timestamp's varint bytes, the same for all the samples of a scrape, map to their text through a
  dict made for each body.  Any other series (fields in another order, unknown fields) is parsed
  and written again in that shape by `_canonical`, and any other sample is read through
  ``Sample``: exact, and dearer (a body whose every series has its samples before its labels, 3.7
  us a series against 2.4 for the version before; one whose every series has a label of 130 bytes
  takes the common path, 1.6 against 2.4).

Measured by `bench/micro_remote_write.py` on `tests/fixtures/remote_write.snappy` (a real
Prometheus 2.42 body: 377 series of one sample each, 351 stored, 26 NaN), against the JSON path for
the same 351 samples, in microseconds a stored sample (`timeit`, best of 5, median of 7 rounds, one
run on the 2-core development VM)::

    JSON path, the same samples as an array (bodies.decode_metrics)     3.41
    remote write, label sets not in the memo (a sender's first request) 5.64   x1.65
    remote write, label sets in the memo (every later request)          1.28   x0.37

The version before, which keyed the memo on a tuple of each label's bytes and read every sample
through upb, against this one in one run (the two modules alternated, `timeit`, median of 9 rounds,
in microseconds a series of the same body): 2.21 against 1.16 with the memo full, 6.14 against
5.10 with it empty.  The first version read every series through the spec's messages and
remembered nothing: 7.65 a stored sample in a run where the version before took 7.29 with an
empty memo and 2.36 with a full one.  A sender with more series than the memo holds pays the
empty-memo figure on every request (an LRU over a cycle larger than itself hits nothing).

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
_LABEL_TAG = 0x0A
"""A ``TimeSeries``' ``labels`` field: number 1, wire type 2 (length-delimited)."""
_SAMPLE_TAG = 0x12
"""A ``TimeSeries``' ``samples`` field: number 2, wire type 2."""
_VALUE_TAG = 0x09
"""A ``Sample``'s ``value`` field: number 1, wire type 1 (eight bytes)."""
_TIMESTAMP_TAG = 0x10
"""A ``Sample``'s ``timestamp`` field: number 2, wire type 0 (varint)."""
_EXEMPLAR_TAG = 0x1A
"""A ``TimeSeries``' ``exemplars`` field: number 3, wire type 2."""
_HISTOGRAM_TAG = 0x22
"""A ``TimeSeries``' ``histograms`` field: number 4, wire type 2."""

_NS_PER_MS = 1_000_000
_MIN_MS = -(-MIN_NS // _NS_PER_MS)
_MAX_MS = MAX_NS // _NS_PER_MS
_MAX_HEADER = 5
"""Bytes of snappy's varint length header: a 32-bit length takes at most five."""


class Messages(NamedTuple):
    """The message classes built by `messages`: remote write 1.0's, and the reading view."""

    WriteRequest: Any
    TimeSeries: Any
    Label: Any
    Sample: Any
    Exemplar: Any
    MetricMetadata: Any
    Histogram: Any
    EncodedWriteRequest: Any


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
    # The reading view: the same field number, so the same bytes parse.
    "EncodedWriteRequest": [("timeseries", 1, _MANY, _TYPE.TYPE_BYTES, "")],
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
        classes.WriteRequest.FromString(data)  # the check: the view below reads the bytes it keeps
        request = classes.EncodedWriteRequest.FromString(data)
    except DecodeError as error:
        raise IngestError(400, "malformed remote write", f"not a WriteRequest: {error}") from None
    return _convert(request.timeseries)


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


def _convert(timeseries: Any) -> Converted:
    """Map the series of a ``WriteRequest``, each its encoded bytes, to storage lines (see Cost).

    A series of the shape Prometheus sends (its labels, then its samples, each sample's length one
    byte) is read here: its labels' bytes are the key of `_series_text`, and each sample of the
    common shapes (value and timestamp, or timestamp alone: proto3 leaves out a 0.0 value) is read
    with `struct`, its timestamp's varint bytes mapped to their text once a body in `stamps`.  A
    series with anything after its samples goes through `_canonical`, which counts its exemplars
    and histograms and puts it in that shape; any other sample is read through ``Sample``.
    """
    lines: list[str] = []
    append = lines.append
    dumps = ujson.dumps
    unpack = _DOUBLE.unpack_from
    sample_message = messages().Sample
    stamps: dict[bytes, str] = {}
    errors: list[tuple[int, str]] = []
    extras = {"exemplar": 0, "histogram": 0}
    skipped: dict[str, int] = {}
    rejected = 0
    index = 0
    for data in timeseries:
        end = len(data)
        position = 0
        while position < end and data[position] == _LABEL_TAG:
            if (size := data[position + 1]) < 0x80:
                position += 2 + size
            else:
                position = _after_field(data, position)
        labels_end = position
        count = 0
        while position < end and data[position] == _SAMPLE_TAG and (size := data[position + 1]) < 0x80:
            position += 2 + size
            count += 1
        if position != end:  # exemplars, histograms, or another shape
            data, labels_end, count = _canonical(data, position, extras)
            end = len(data)
        if not count:
            continue
        try:
            head, tail = _series_text(data[:labels_end])
        except IngestError as error:
            rejected += count
            errors.extend((index + i, error.detail) for i in range(min(count, MAX_ERRORS - len(errors))))
            index += count
            continue
        position = labels_end
        while position < end:
            size = data[position + 1]
            start = position + 2
            position = start + size
            if size >= 11 and data[start] == _VALUE_TAG and data[start + 9] == _TIMESTAMP_TAG:
                varint = data[start + 10 : position]
                number = ""
            elif size >= 2 and data[start] == _TIMESTAMP_TAG:
                varint = data[start + 1 : position]
                number = "0.0"  # proto3 leaves out a 0.0 value (not -0.0: its bits are not zero)
            else:
                varint = b""
            stamp = stamps.get(varint)
            if stamp is None:
                stamp = stamps[varint] = _stamp_text(varint)
            if stamp:  # the shape is sure: one value field or none, then one timestamp field
                value = 0.0 if number else unpack(data, start + 1)[0]
                ms = 0
            else:
                sample = sample_message.FromString(data[start:position])
                value = sample.value
                ms = sample.timestamp
            if value - value != 0.0:
                reason = _skip_reason(value)
                skipped[reason] = skipped.get(reason, 0) + 1
            elif stamp:
                append(f"{head}{number or dumps(value)}{stamp}{tail}")
            elif _MIN_MS <= ms <= _MAX_MS:
                append(f'{head}{dumps(value)},"timestamp":{ms * _NS_PER_MS}{tail}')
            else:
                rejected += 1
                if len(errors) < MAX_ERRORS:
                    errors.append((index, _timestamp_error(ms)))
            index += 1
    counted = {reason: count for reason, count in extras.items() if count}
    return Converted(lines, rejected, errors, {**counted, **skipped} if counted else skipped)


def _canonical(data: bytes, position: int, extras: dict[str, int]) -> tuple[bytes, int, int]:
    """A series `_convert` could not read past `position` in the shape it reads, as its labels and
    samples in that shape: ``(labels + samples, len(labels), number of samples)``.

    Counts its exemplars and histograms in `extras`: those that follow its samples as Prometheus
    writes them (fields in number order) without a parse.  Another shape is parsed and written
    again without exemplars, histograms and unknown fields (the mapping never reads them): upb
    writes fields in number order, and each sample in at most 22 bytes.
    """
    exemplars = histograms = 0
    end = len(data)
    while position < end and data[position] == _EXEMPLAR_TAG:
        position = _after_field(data, position)
        exemplars += 1
    while position < end and data[position] == _HISTOGRAM_TAG:
        position = _after_field(data, position)
        histograms += 1
    if position != end:
        series = messages().TimeSeries.FromString(data)
        exemplars, histograms = len(series.exemplars), len(series.histograms)
        series.ClearField("exemplars")
        series.ClearField("histograms")
        series.DiscardUnknownFields()
        data = series.SerializeToString()
        end = len(data)
    extras["exemplar"] += exemplars
    extras["histogram"] += histograms
    position = 0
    while position < end and data[position] == _LABEL_TAG:
        position = _after_field(data, position)
    labels_end = count = position
    while position < end and data[position] == _SAMPLE_TAG:
        position = _after_field(data, position)
        count += 1
    return data[:position], labels_end, count - labels_end


def _after_field(data: bytes, position: int) -> int:
    """Where the length-delimited field whose tag byte is at `position` ends (its length a varint)."""
    size = 0
    shift = 0
    position += 1
    while data[position] >= 0x80:
        size |= (data[position] & 0x7F) << shift
        shift += 7
        position += 1
    return position + 1 + (size | data[position] << shift)


def _stamp_text(varint: bytes) -> str:
    """``,"timestamp":NS`` for a timestamp's varint bytes, or ``""`` when not one varint in range."""
    if not 0 < len(varint) <= 10 or varint[-1] >= 0x80 or any(byte < 0x80 for byte in varint[:-1]):
        return ""
    ms = messages().Sample.FromString(bytes([_TIMESTAMP_TAG]) + varint).timestamp
    if not _MIN_MS <= ms <= _MAX_MS:
        return ""
    return f',"timestamp":{ms * _NS_PER_MS}'


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _series_text(labels: bytes) -> tuple[str, str]:
    """A series' storage line around its value and timestamp: ``('{"name":N,"value":', ',"tags":T}')``.

    `labels` are the series' labels as encoded in a ``TimeSeries``: its ``labels`` fields, whole,
    and nothing else.  Raises `IngestError` (400 ``invalid sample``) for a series that cannot be
    stored, and is then not remembered.
    """
    try:
        pairs = [(label.name, label.value) for label in messages().TimeSeries.FromString(labels).labels]
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
