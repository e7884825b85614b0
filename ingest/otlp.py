"""OTLP/HTTP metrics to samples, and the answers OTLP specifies.  Pure: no Twisted, no clock.

Owns the body of ``POST /v1/metrics``: an ``ExportMetricsServiceRequest`` as protobuf
(``application/x-protobuf``) or as OTLP/JSON (``application/json``), the mapping of its points to
samples, the ``ExportMetricsServiceResponse`` that answers it (`response`) and the
``google.rpc.Status`` of an error answer (`status_body`; `ingest.api` picks its code).
The caller has inflated gzip and checked the media type; it passes the time of receipt.

Mapping (PRODUCT.md, "OTLP/HTTP metrics"), as Prometheus' OTLP translation does it:

- A Gauge or Sum point is one sample named by the metric's name, its value ``as_double`` or
  ``as_int``.  A Histogram point is ``<name>_count``, ``<name>_sum`` (when the point has a sum) and
  one ``<name>_bucket`` per bucket with an ``le`` tag: the counts made cumulative, the bounds as
  Go's ``strconv.FormatFloat(bound, 'f', -1, 64)`` writes them (shortest digits, never an exponent:
  ``0.5``, ``1``, ``0.000001``; zero is ``0``), then ``le="+Inf"`` holding the point's count; buckets
  run to the shorter of the bounds and the counts, as Prometheus' do.  A Summary point is
  ``<name>_count``, ``<name>_sum`` and one ``<name>`` per quantile with a ``quantile`` tag (written
  as ``le`` is).  Names are stored as sent: no ``_total`` or unit suffix.
- Tags: the resource's attributes, then the scope's name as ``otel_scope_name`` when not empty,
  then the point's attributes; a later one wins a clash, and ``le``/``quantile`` win over all, and
  go last.  A string attribute is its value; the others are their JSON text: an int its digits, a
  bool ``true``/``false``, a double as JavaScript writes a number (``1``, ``0.5``, ``1e+21``; the
  non-finite as ``NaN``, ``Infinity``, ``-Infinity``), an array or a kvlist compact JSON (strings
  unescaped but for JSON's own escapes; bytes inside them a base64 string), bytes base64, an empty
  value ``""``.  For a scalar this is the text the OpenTelemetry Collector's ``AsString`` gives
  (Prometheus' label values), but for the non-finite doubles; its arrays and kvlists differ in
  escapes (Go's JSON escapes ``<``, ``>`` and ``&``).
- The timestamp is ``time_unix_nano``; 0 means `now_ns`.  The start time, the Sum's temporality and
  monotonicity (a delta Sum is stored as the delta it is), the scope's version and attributes,
  histogram ``min``/``max``, descriptions, units and metadata are not stored.
- Not stored, counted in `Converted.skipped` by reason: ``no_recorded_value`` (a point with that
  flag, once a point), ``nan`` and ``infinity`` (once a value: a Histogram's non-finite sum skips
  its ``_sum`` sample only), ``exponential_histogram`` (once a point), ``exemplar`` (once an
  exemplar of a Gauge, Sum or Histogram point).
- Rejected, counted in `Converted.rejected` with the first `MAX_ERRORS` reasons, by the JSON
  sample's rules (`ingest.sample`): a name, a tag set or a timestamp they refuse, a Gauge or Sum
  point with no value, a cumulative bucket count past 64 bits.  A point is rejected whole, with
  all its samples; its index counts every data point of the body from 0.

Errors: a body that is not an ``ExportMetricsServiceRequest`` is ``IngestError(400, "malformed
OTLP", detail)``; nothing else is raised, for any input.

OTLP/JSON is the protobuf JSON mapping with OTLP's exceptions: trace and span ids in hex, which
this module drops before the mapping runs, since exemplars are not stored.  A body in the form
every exporter writes (lowerCamel keys, 64-bit integers as strings or numbers, doubles as numbers
or ``"NaN"``/``"Infinity"``/``"-Infinity"``, string, bool, int and double attribute values) is
walked as ujson decodes it; anything else (an unknown or snake_case key, an array or kvlist
attribute, a null, a double as another string) sends the whole body through
``google.protobuf.json_format`` into the official message, which is then read as a protobuf body.
Tests hold both paths to the same samples.  The walk does not check what it does not read
(descriptions, units, start times, exemplars' contents), where ``json_format`` refuses a wrong type.

Cost.  A protobuf body is parsed by upb into the official schema with two changes (`_readers`).
The data points' ``attributes`` are read as their wire bytes, so that a point's attributes are a
tuple of bytes (made in C) that keys the tag sets met so far in its scope (`_ScopeTags`); each
distinct set is decoded (a short string attribute by `string_attribute`, without upb's objects),
checked over the scope's checked tags and encoded once.  And a Gauge's or Sum's points are read as
their wire bytes, since reading a point's fields through upb's objects took 1.3 us of its 3.4 in
one profile (0.8 of them ``tuple(point.attributes)``): a point as every protobuf library writes
it (fields in number order) has its time and value at fixed places, read by one `struct` call,
and the rest of it (its tail: attributes, flags, exemplars) keys a cache in its scope, so that it
is parsed once (`_ScopeTags.of_tail`); the point is then written from pre-encoded parts when it
passes every check of `_Output.number`, which holds the rules (any other point goes through it,
parsed whole when its bytes have another form).  Names, ``le``/``quantile`` texts and a run of
equal timestamps are also written once a body.  Measured by ``bench/micro_otlp.py`` (medians of 5
rounds; the range of two runs on the development VM, whose load varies), for 1,000 points of 50
Sums, 4 resource and 3 point attributes each, against the same 1,000 samples posted to ``POST
/metrics`` as a JSON array, 5.0 to 5.6 us a sample in the same runs:

- protobuf, 20 distinct attribute sets: 0.93 to 0.96 us a point (2.06 before points were read as
  bytes, in runs alternating with these), about the same with a start time on each point (as the
  SDK sends a Sum: 1.12 against 1.05 in one run); 1,000 distinct sets: 5.2 to 5.3 us (5.4 to
  5.5), about the JSON array's cost (each set decoded, checked and encoded, as the JSON path
  checks each sample's tags);
- OTLP/JSON, the direct walk: 3.7 to 4.0 us; through ``json_format`` (an unknown key): 39 to 41 us;
- a Histogram of 10 bounds: 0.6 us a sample (13 samples a point).
"""

from __future__ import annotations

import base64
import itertools
import re
import struct
from decimal import Decimal
from functools import cache
from typing import Any

import ujson
from google.protobuf import (  # type: ignore[import-untyped]
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from ingest.errors import IngestError
from ingest.sample import MAX_TAGS, Converted, check_name, check_tags, check_timestamp, invalid

MAX_ERRORS = 100
"""How many rejected points `Converted.errors` lists; the others are only counted."""

SCOPE_TAG = "otel_scope_name"
NO_RECORDED_VALUE = 1
"""``DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK``."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
_UINT32_MAX = 2**32 - 1
_DIGITS = re.compile(r"-?[0-9]+")
_EXEMPLAR_IDS = ("traceId", "spanId", "trace_id", "span_id")
_NEEDS_BYTES = ("NumberDataPoint", "HistogramDataPoint", "SummaryDataPoint")
_TIME_AND_DOUBLE = struct.Struct("<BQBd")
_INT = struct.Struct("<q")

Request = metrics_service_pb2.ExportMetricsServiceRequest
Response = metrics_service_pb2.ExportMetricsServiceResponse


def decode(body: bytes, is_json: bool, now_ns: int) -> Converted:
    """The samples of one OTLP/HTTP metrics body; `now_ns` stands in for a zero timestamp.

    Raises `IngestError` (400 ``malformed OTLP``) when the body is not an
    ``ExportMetricsServiceRequest`` in its encoding; invalid points are data (`Converted`).
    """
    if not is_json:
        try:
            request = _readers()[0].FromString(body)
        except DecodeError as error:
            raise _malformed(f"not a protobuf ExportMetricsServiceRequest: {error}") from None
        return _protobuf_request(request, _Output(now_ns))
    try:
        document = ujson.loads(body)
    except ValueError as error:
        raise _malformed(f"not JSON: {error}") from None
    if type(document) is not dict:
        raise _malformed("an ExportMetricsServiceRequest must be a JSON object")
    try:
        return _json_request(document, _Output(now_ns))
    except _Unusual:
        return _mapped_json_request(document, now_ns)


def response(converted: Converted, is_json: bool) -> bytes:
    """The ``ExportMetricsServiceResponse`` for `converted`, in the request's encoding.

    Empty when every point was stored or skipped; else ``partial_success`` holds the number of
    rejected points and the listed reasons, as the spec asks of a partial success.
    """
    message = Response()
    if converted.rejected:
        message.partial_success.rejected_data_points = converted.rejected
        message.partial_success.error_message = _rejections(converted)
    return _encoded(message, is_json)


def status_body(message: str, code: int, is_json: bool) -> bytes:
    """A ``google.rpc.Status`` with `code` (a ``google.rpc.Code``) and `message`, in the request's
    encoding: the body OTLP/HTTP specifies for an error answer."""
    return _encoded(_status_class()(code=code, message=message), is_json)


def _malformed(detail: str) -> IngestError:
    return IngestError(400, "malformed OTLP", detail[:500])


def _encoded(message: Any, is_json: bool) -> bytes:
    if is_json:
        text: str = json_format.MessageToJson(message, indent=None)
        return text.encode("utf-8")
    data: bytes = message.SerializeToString()
    return data


def _rejections(converted: Converted) -> str:
    reasons = "; ".join(f"point {index}: {reason}" for index, reason in converted.errors)
    more = converted.rejected - len(converted.errors)
    points = "data point" if converted.rejected == 1 else "data points"
    return f"{converted.rejected} {points} rejected: {reasons}" + (f"; and {more} more" if more else "")


class _Unusual(Exception):
    """A JSON body that the direct walk does not read; `json_format` reads it instead."""


class _TagSet:
    """The tags of a group of points, checked once and encoded once: `text`, or `error` when invalid.

    `prefix` gives, for ``le`` or ``quantile``, the text to which ``"le":"0.5"}`` is appended to
    make the tags with that key set last (any of the point's own taken out).
    """

    __slots__ = ("_prefixes", "error", "tags", "text")

    def __init__(self, tags: dict[str, str], text: str, error: str = "") -> None:
        self.tags = tags
        self.text = text
        self.error = error
        self._prefixes: dict[str, str] = {}

    @classmethod
    def checked(cls, tags: dict[str, str]) -> _TagSet:
        try:
            check_tags(tags)
        except IngestError as error:
            return cls(tags, "", error.detail)
        return cls(tags, ujson.dumps(tags))

    def with_point(self, point_tags: dict[str, str]) -> _TagSet:
        """These tags with a point's over them: the point's pairs checked, then the count (all of
        them when these are invalid: the point's may replace the invalid pair)."""
        if not point_tags:
            return self
        tags = {**self.tags, **point_tags}
        try:
            check_tags(tags if self.error else point_tags)
            if len(tags) > MAX_TAGS:
                check_tags(tags)
        except IngestError as error:
            return _TagSet(tags, "", error.detail)
        if self.text != "{}" and not self.error and point_tags.keys().isdisjoint(self.tags):  # no re-encoding
            return _TagSet(tags, self.text[:-1] + "," + ujson.dumps(point_tags)[1:])
        return _TagSet(tags, ujson.dumps(tags))

    def prefix(self, key: str) -> str:
        """Raises `IngestError` when these tags with `key` added are too many."""
        prefix = self._prefixes.get(key)
        if prefix is None:
            rest = {name: value for name, value in self.tags.items() if name != key}
            try:
                check_tags({**rest, key: "+Inf"})
                prefix = ujson.dumps(rest)[:-1] + "," if rest else "{"
            except IngestError as error:
                prefix = "!" + error.detail
            self._prefixes[key] = prefix
        if prefix[0] == "!":
            raise invalid(prefix[1:])
        return prefix


_Tail = tuple[()] | tuple[_TagSet, int, int, str]
"""A Gauge or Sum point's tail (`_ScopeTags.of_tail`): ``(tags, flags, exemplar count, end)``,
`end` being the text its line ends with (``,"tags":{...}}``) when the tail lets the point be
stored (its flags, exemplars and tags), else empty; or ``()`` when the tail sets a time or value
again, and its point is parsed whole."""


class _ScopeTags:
    """The tags of one scope's points: the resource's attributes and the scope's name, checked once,
    and under them each distinct attribute set of a point, decoded, checked and encoded once.

    Keys: the tuple of a point's attributes' wire bytes (protobuf), the ujson text of its
    attributes (OTLP/JSON).
    """

    __slots__ = ("_sets", "base", "tails")

    def __init__(self, resource: dict[str, str], scope_name: str) -> None:
        base = dict(resource)
        if scope_name:
            base[SCOPE_TAG] = scope_name
        self.base = _TagSet.checked(base)
        self._sets: dict[Any, _TagSet] = {}
        self.tails: dict[bytes, _Tail] = {}

    def of_wire(self, key: tuple[bytes, ...]) -> _TagSet:
        """Raises `IngestError` (400) when an attribute's bytes are not a ``KeyValue``."""
        tags = self._sets.get(key)
        if tags is None:
            tags = self._sets[key] = self.base.with_point(_wire_attributes(key))
        return tags

    def of_tail(self, tail: bytes) -> _Tail:
        """What a Gauge or Sum point's tail, its wire bytes past its value, holds (`tails` caches
        it).  Raises `IngestError` (400) when the tail is not a point's."""
        known = self.tails.get(tail)
        if known is None:
            attributes = _short_attributes(tail)
            flags = exemplars = 0
            if attributes is None:
                point = _parsed(_readers()[2], tail)
                if (
                    point.HasField("time_unix_nano")
                    or point.WhichOneof("value")
                    or point.HasField("start_time_unix_nano")
                ):
                    self.tails[tail] = ()
                    return ()
                attributes, flags, exemplars = tuple(point.attributes), point.flags, len(point.exemplars)
            tags = self.of_wire(attributes)
            plain = not (flags & NO_RECORDED_VALUE or exemplars or tags.error)
            known = self.tails[tail] = (tags, flags, exemplars, f',"tags":{tags.text}}}' if plain else "")
        return known

    def of_json(self, output: _Output, point: dict[str, Any]) -> _TagSet:
        """The tag set of a JSON point, whose exemplars are counted; raises `_Unusual`."""
        if point.get("exemplars"):
            output.skip("exemplar", len(_array(point, "exemplars")))
        attributes = point.get("attributes")
        key = ujson.dumps(attributes) if attributes else ""
        tags = self._sets.get(key)
        if tags is None:
            tags = self._sets[key] = self.base.with_point(_json_attributes(_array(point, "attributes")))
        return tags


class _Output:
    """The samples of one body as they are written, what was rejected or skipped, and the caches.

    Every data point of the body passes through `number`, `histogram`, `summary` or
    `skip_points`, in order, so that `index` is the point's index in the body.
    """

    __slots__ = (
        "_labels",
        "_names",
        "_now_text",
        "_time_ns",
        "_time_text",
        "errors",
        "index",
        "lines",
        "rejected",
        "skipped",
    )

    def __init__(self, now_ns: int) -> None:
        self.lines: list[str] = []
        self.rejected = 0
        self.errors: list[tuple[int, str]] = []
        self.skipped: dict[str, int] = {}
        self.index = -1
        self._now_text = str(now_ns)
        self._time_ns = 0
        self._time_text = self._now_text
        self._names: dict[str, str] = {}
        self._labels: dict[tuple[str, float], str] = {}

    def converted(self) -> Converted:
        return Converted(self.lines, self.rejected, self.errors, self.skipped)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def skip_points(self, reason: str, count: int) -> None:
        if count:
            self.index += count
            self.skip(reason, count)

    def reject(self, detail: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((self.index, detail))

    def name_text(self, name: str) -> str:
        """The JSON text of a sample name, or ``!`` and the reason it is refused."""
        text = self._names.get(name)
        if text is None:
            try:
                check_name(name)
                text = ujson.dumps(name)
            except IngestError as error:
                text = "!" + error.detail
            self._names[name] = text
        return text

    def time_text(self, ns: int) -> str:
        """The text of a timestamp in nanoseconds, 0 being the time of receipt; raises `IngestError`."""
        if ns != self._time_ns:
            if not ns:
                return self._now_text
            check_timestamp(ns)
            self._time_ns, self._time_text = ns, str(ns)
        return self._time_text

    def number(self, name: str, value: int | float | None, ns: int, flags: int, tags: _TagSet) -> None:
        """One Gauge or Sum point: `name` from `name_text`, `value` None when the point has none."""
        self.index += 1
        if flags & NO_RECORDED_VALUE:
            self.skip("no_recorded_value")
            return
        if type(value) is float:
            if value - value != 0.0:
                self.skip("nan" if value != value else "infinity")
                return
            value_text = ujson.dumps(value)
        elif value is None:
            self.reject(name[1:] if name[0] == "!" else "value: missing")
            return
        else:
            value_text = str(value)
        if name[0] == "!":
            self.reject(name[1:])
            return
        if tags.error:
            self.reject(tags.error)
            return
        if ns == self._time_ns:
            time_text = self._time_text
        else:
            try:
                time_text = self.time_text(ns)
            except IngestError as error:
                self.reject(error.detail)
                return
        self.lines.append(
            f'{{"name":{name},"value":{value_text},"timestamp":{time_text},"tags":{tags.text}}}'
        )

    def histogram(
        self,
        names: tuple[str, str, str],
        count: int,
        total: float | None,
        bounds: tuple[float, ...],
        counts: list[int],
        ns: int,
        flags: int,
        tags: _TagSet,
    ) -> None:
        """One Histogram point; `names` are the ``_count``, ``_sum`` and ``_bucket`` names' texts."""
        cumulative = list(itertools.accumulate(counts[: min(len(bounds), len(counts))]))
        too_many = bool(cumulative) and cumulative[-1] > _UINT64_MAX
        opened = self._open(names, count, total, ns, flags, tags, "le", too_many)
        if opened is not None:
            bucket_name, line, prefix = opened
            bucket = f'{{"name":{bucket_name},"value":'
            for bound, value in zip(bounds, cumulative, strict=False):
                self.lines.append(f"{bucket}{value}{line}{prefix}{self._label('le', bound)}")
            self.lines.append(f'{bucket}{count}{line}{prefix}"le":"+Inf"}}}}')

    def summary(
        self,
        names: tuple[str, str, str],
        count: int,
        total: float,
        quantiles: list[tuple[float, float]],
        ns: int,
        flags: int,
        tags: _TagSet,
    ) -> None:
        """One Summary point; `names` are the ``_count``, ``_sum`` and the quantiles' names' texts."""
        opened = self._open(names, count, total, ns, flags, tags, "quantile" if quantiles else "", False)
        if opened is not None:
            quantile_name, line, prefix = opened
            for quantile, value in quantiles:
                if value - value != 0.0:
                    self.skip("nan" if value != value else "infinity")
                    continue
                label = self._label("quantile", quantile)
                self.lines.append(
                    f'{{"name":{quantile_name},"value":{ujson.dumps(value)}{line}{prefix}{label}'
                )

    def _open(
        self,
        names: tuple[str, str, str],
        count: int,
        total: float | None,
        ns: int,
        flags: int,
        tags: _TagSet,
        key: str,
        too_many: bool,
    ) -> tuple[str, str, str] | None:
        """A Histogram or Summary point's start: skipped or rejected (None), or its ``_count`` and
        ``_sum`` samples written and ``(the last name's text, a line's text from its timestamp to its
        tags, the tags' text before the `key` tag)`` returned for its other samples."""
        self.index += 1
        if flags & NO_RECORDED_VALUE:
            self.skip("no_recorded_value")
            return None
        try:
            count_name, sum_name, last_name = (_valid_name(name) for name in names)
            if tags.error:
                raise invalid(tags.error)
            line = f',"timestamp":{self.time_text(ns)},"tags":'
            prefix = tags.prefix(key) if key else ""
            if too_many:
                raise invalid("value: integer out of 64-bit range")
        except IngestError as error:
            self.reject(error.detail)
            return None
        self.lines.append(f'{{"name":{count_name},"value":{count}{line}{tags.text}}}')
        if total is not None:
            if total - total == 0.0:
                self.lines.append(f'{{"name":{sum_name},"value":{ujson.dumps(total)}{line}{tags.text}}}')
            else:
                self.skip("nan" if total != total else "infinity")
        return last_name, line, prefix

    def _label(self, key: str, bound: float) -> str:
        """``"le":"0.5"}}``: the end of a bucket's or a quantile's line, from its tag on."""
        label = self._labels.get((key, bound))
        if label is None:
            label = self._labels[(key, bound)] = '"' + key + '":' + ujson.dumps(positional_text(bound)) + "}}"
        return label


def _valid_name(text: str) -> str:
    if text[0] == "!":
        raise invalid(text[1:])
    return text


def _suffixed_names(output: _Output, name: str, last: str) -> tuple[str, str, str]:
    """The texts of ``<name>_count``, ``<name>_sum`` and ``<name><last>``; all refused with `name`."""
    own = output.name_text(name)
    if own[0] == "!":
        return own, own, own
    return output.name_text(name + "_count"), output.name_text(name + "_sum"), output.name_text(name + last)


# Protobuf, and OTLP/JSON through json_format.


@cache
def _readers() -> tuple[Any, Any, Any]:
    """The classes of ``ExportMetricsServiceRequest``, ``NumberDataPoint`` and a point's tail as
    this module reads them: the official schema, but for

    - the ``attributes`` of Number, Histogram and Summary points, read as the wire bytes of each
      ``KeyValue`` (the same wire format: a length-delimited field);
    - the ``data_points`` of Gauges and Sums, read as the wire bytes of each point (`_protobuf_numbers`);
    - ``NumberDataPointTail``: ``NumberDataPoint`` in a proto2 file, so that its times and value
      have presence (``HasField``), which tells whether a point's tail sets them again.

    Built once, on first use, in a pool of its own from the official files' descriptors.
    """
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    number_point = descriptor_pb2.DescriptorProto()

    def add(file: Any) -> None:
        if file.name in added:
            return
        added.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb)
        if file.name == metrics_pb2.DESCRIPTOR.name:
            for message in proto.message_type:
                for field in message.field:
                    if (message.name in _NEEDS_BYTES and field.name == "attributes") or (
                        message.name in ("Gauge", "Sum") and field.name == "data_points"
                    ):
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        field.ClearField("type_name")
                if message.name == "NumberDataPoint":
                    number_point.CopyFrom(message)
        pool.Add(proto)

    add(metrics_service_pb2.DESCRIPTOR)
    tail = descriptor_pb2.FileDescriptorProto(
        name="ingest/number_tail.proto",
        package=metrics_pb2.DESCRIPTOR.package,
        syntax="proto2",
        dependency=[metrics_pb2.DESCRIPTOR.name],
    )
    tail.message_type.add().CopyFrom(number_point)
    tail.message_type[0].name = "NumberDataPointTail"
    pool.Add(tail)
    package = metrics_pb2.DESCRIPTOR.package
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(Request.DESCRIPTOR.full_name)),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.NumberDataPoint")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.NumberDataPointTail")),
    )


def _protobuf_request(request: Any, output: _Output) -> Converted:
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            tags = _ScopeTags(resource, scope_metrics.scope.name)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind == "gauge" or kind == "sum":
                    _protobuf_numbers(output, metric.name, getattr(metric, kind).data_points, tags)
                elif kind == "histogram":
                    _protobuf_histograms(output, metric.name, metric.histogram.data_points, tags)
                elif kind == "summary":
                    _protobuf_summaries(output, metric.name, metric.summary.data_points, tags)
                elif kind == "exponential_histogram":
                    output.skip_points("exponential_histogram", len(metric.exponential_histogram.data_points))
    return output.converted()


def _protobuf_numbers(output: _Output, name: str, points: Any, scope: _ScopeTags) -> None:
    """Gauge or Sum points, each given as its wire bytes.

    A point in the form every protobuf library writes a timed one (its fields in number order: a
    start time or none, the time, ``as_double`` or ``as_int``, then anything but these) has its
    time and value read at their places; the rest, its tail (exemplars, attributes, flags), is
    parsed once per distinct tail in its scope (`_ScopeTags.of_tail`).  Any other point (no time,
    an int with exemplars, a tail setting a time or value again) is parsed whole.

    A point that passes every check of `_Output.number` (a valid name, tags and time, a finite
    value, no flag or exemplar in its tail) has its line written here from pre-encoded parts;
    any other goes through `_Output.number`.
    """
    name_text = output.name_text(name)
    if name_text[0] == "!":  # every point rejected, or skipped
        for data in points:
            _protobuf_number(output, name_text, data, scope)
        return
    head = f'{{"name":{name_text},"value":'
    lines = output.lines
    tails = scope.tails
    time_ns, time_text = -1, ""  # the last valid time and its text
    for data in points:
        at = 9 if data[:1] == b"\x11" else 0  # past the start time, not stored
        if len(data) < at + 18:
            _protobuf_number(output, name_text, data, scope)
            continue
        time_tag, ns, value_tag, value = _TIME_AND_DOUBLE.unpack_from(data, at)
        if time_tag != 0x19 or (value_tag != 0x21 and value_tag != 0x31):
            _protobuf_number(output, name_text, data, scope)
            continue
        if value_tag == 0x31:
            (value,) = _INT.unpack_from(data, at + 10)
        tail = data[at + 18 :]
        known = tails.get(tail) or scope.of_tail(tail)
        if not known:
            _protobuf_number(output, name_text, data, scope)
            continue
        tags, flags, exemplars, end = known
        if ns != time_ns and end:
            try:
                time_text = output.time_text(ns)
                time_ns = ns
            except IngestError:
                pass  # rejected by `_Output.number`
        if ns == time_ns and end:
            if type(value) is int:
                output.index += 1
                lines.append(f'{head}{value},"timestamp":{time_text}{end}')
                continue
            if value - value == 0.0:
                output.index += 1
                lines.append(f'{head}{ujson.dumps(value)},"timestamp":{time_text}{end}')
                continue
        if exemplars:
            output.skip("exemplar", exemplars)
        output.number(name_text, value, ns, flags, tags)


def _short_attributes(tail: bytes) -> tuple[bytes, ...] | None:
    """The attributes' wire bytes of a tail made only of attributes shorter than 128 bytes (the
    common form), 3 times faster than upb's tail view; None for any other tail."""
    attributes: list[bytes] = []
    at, size = 0, len(tail)
    while at < size:
        if at + 1 == size or tail[at] != 0x3A or tail[at + 1] > 127:  # field 7, one byte of length
            return None
        end = at + 2 + tail[at + 1]
        attributes.append(tail[at + 2 : end])
        at = end
    return tuple(attributes) if at == size else None


def _protobuf_number(output: _Output, name_text: str, data: bytes, scope: _ScopeTags) -> None:
    """A Gauge or Sum point from its wire bytes, parsed whole."""
    point = _parsed(_readers()[1], data)
    if point.exemplars:
        output.skip("exemplar", len(point.exemplars))
    tags = scope.of_wire(tuple(point.attributes))
    kind = point.WhichOneof("value")
    value = point.as_double if kind == "as_double" else point.as_int if kind == "as_int" else None
    output.number(name_text, value, point.time_unix_nano, point.flags, tags)


def _parsed(reader: Any, data: bytes) -> Any:
    """Raises `IngestError` (400) when `data` is not a `reader` message."""
    try:
        return reader.FromString(data)
    except DecodeError as error:
        raise _malformed(f"not a protobuf ExportMetricsServiceRequest: a data point: {error}") from None


def _protobuf_histograms(output: _Output, name: str, points: Any, scope: _ScopeTags) -> None:
    names = _suffixed_names(output, name, "_bucket")
    for point in points:
        if point.exemplars:
            output.skip("exemplar", len(point.exemplars))
        total = point.sum if point.HasField("sum") else None
        output.histogram(
            names,
            point.count,
            total,
            tuple(point.explicit_bounds),
            list(point.bucket_counts),
            point.time_unix_nano,
            point.flags,
            scope.of_wire(tuple(point.attributes)),
        )


def _protobuf_summaries(output: _Output, name: str, points: Any, scope: _ScopeTags) -> None:
    names = _suffixed_names(output, name, "")
    for point in points:
        tags = scope.of_wire(tuple(point.attributes))
        quantiles = [(quantile.quantile, quantile.value) for quantile in point.quantile_values]
        output.summary(names, point.count, point.sum, quantiles, point.time_unix_nano, point.flags, tags)


def _wire_attributes(key: tuple[bytes, ...]) -> dict[str, str]:
    """The attributes of a point from their wire bytes; raises `IngestError` (400) on a broken one.

    A short string attribute is read by `string_attribute`, 3 times faster than through upb's
    message objects; any other through ``KeyValue``.
    """
    tags: dict[str, str] = {}
    for data in key:
        pair = string_attribute(data)
        if pair is not None:
            tags[pair[0]] = pair[1]
            continue
        try:
            key_value = common_pb2.KeyValue.FromString(data)
        except DecodeError as error:
            raise _malformed(f"not a protobuf ExportMetricsServiceRequest: an attribute: {error}") from None
        tags[key_value.key] = _attribute_text(key_value.value)
    return tags


def string_attribute(data: bytes) -> tuple[str, str] | None:
    """``(key, value)`` of a serialized ``KeyValue`` holding a string, in the form every protobuf
    library writes when both are shorter than 126 bytes (``0a`` len key ``12`` len ``0a`` len
    value); None for anything else (a longer one, another value, another field order), which
    ``KeyValue.FromString`` then reads.  Both are checked as UTF-8, as upb checks them."""
    size = len(data)
    if size < 6 or data[0] != 10 or data[1] > 125:
        return None
    value_at = data[1] + 2
    if size < value_at + 4 or data[value_at] != 18 or data[value_at + 2] != 10:
        return None
    length = data[value_at + 3]
    if length > 125 or data[value_at + 1] != length + 2 or size != value_at + 4 + length:
        return None
    try:
        return data[2:value_at].decode("utf-8"), data[value_at + 4 :].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _attributes(key_values: Any) -> dict[str, str]:
    """``KeyValue`` messages as tags: a string as it is, any other value as `_attribute_text` has it."""
    return {key_value.key: _attribute_text(key_value.value) for key_value in key_values}


def _attribute_text(value: Any) -> str:
    """An ``AnyValue`` as a tag: a string as it is, bytes base64, empty ``""``, else `_value_text`."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text: str = value.string_value
        return text
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None:
        return ""
    return _value_text(value)


def _value_text(value: Any) -> str:
    """The JSON text of an ``AnyValue``: numbers as JavaScript writes them, bytes a base64 string."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _json_string(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return number_text(value.double_value)
    if kind == "bytes_value":
        return '"' + base64.b64encode(value.bytes_value).decode("ascii") + '"'
    if kind == "array_value":
        return "[" + ",".join(_value_text(item) for item in value.array_value.values) + "]"
    if kind == "kvlist_value":
        pairs = (f"{_json_string(pair.key)}:{_value_text(pair.value)}" for pair in value.kvlist_value.values)
        return "{" + ",".join(pairs) + "}"
    return "null"


def _json_string(text: str) -> str:
    dumped: str = ujson.dumps(text, ensure_ascii=False, escape_forward_slashes=False)
    return dumped


_MAPPING_ERRORS = (json_format.ParseError, DecodeError, ValueError, TypeError, OverflowError, RecursionError)
"""What `json_format` raises for a JSON value it cannot map (ParseError for most; the others for a
number past a double's range, nesting past its limit or upb's), and what upb raises reading it back."""


def _mapped_json_request(document: dict[str, Any], now_ns: int) -> Converted:
    """OTLP/JSON through `json_format` (the protobuf JSON mapping), then read as a protobuf body."""
    _drop_exemplar_ids(document)
    try:
        request = json_format.ParseDict(document, Request(), ignore_unknown_fields=True)
        read = _readers()[0].FromString(request.SerializeToString())
    except _MAPPING_ERRORS as error:
        raise _malformed(f"not an OTLP/JSON ExportMetricsServiceRequest: {error}") from None
    return _protobuf_request(read, _Output(now_ns))


def _drop_exemplar_ids(document: dict[str, Any]) -> None:
    """Take out the exemplars' trace and span ids: hex in OTLP/JSON, base64 to `json_format`.

    Tolerant of any shape (what is not where a request has it is left to `json_format`).
    """
    for resource_metrics in _items(document, "resourceMetrics", "resource_metrics"):
        for scope_metrics in _items(resource_metrics, "scopeMetrics", "scope_metrics"):
            for metric in _items(scope_metrics, "metrics"):
                if type(metric) is not dict:
                    continue
                for data in metric.values():
                    for point in _items(data, "dataPoints", "data_points"):
                        for exemplar in _items(point, "exemplars"):
                            if type(exemplar) is dict:
                                for key in _EXEMPLAR_IDS:
                                    exemplar.pop(key, None)


def _items(container: Any, *keys: str) -> list[Any]:
    if type(container) is not dict:
        return []
    items: list[Any] = []
    for key in keys:
        value = container.get(key)
        if type(value) is list:
            items += value
    return items


# OTLP/JSON, walked as ujson decodes it.


def _json_fields(message: Any) -> frozenset[str]:
    return frozenset(field.json_name for field in message.DESCRIPTOR.fields)


_REQUEST_FIELDS = _json_fields(Request)
_RESOURCE_METRICS_FIELDS = _json_fields(metrics_pb2.ResourceMetrics)
_RESOURCE_FIELDS = _json_fields(metrics_pb2.ResourceMetrics().resource)
_SCOPE_METRICS_FIELDS = _json_fields(metrics_pb2.ScopeMetrics)
_SCOPE_FIELDS = _json_fields(metrics_pb2.ScopeMetrics().scope)
_METRIC_FIELDS = _json_fields(metrics_pb2.Metric)
_DATA_FIELDS = {
    "gauge": _json_fields(metrics_pb2.Gauge),
    "sum": _json_fields(metrics_pb2.Sum),
    "histogram": _json_fields(metrics_pb2.Histogram),
    "summary": _json_fields(metrics_pb2.Summary),
    "exponentialHistogram": _json_fields(metrics_pb2.ExponentialHistogram),
}
_NUMBER_POINT_FIELDS = _json_fields(metrics_pb2.NumberDataPoint)
_HISTOGRAM_POINT_FIELDS = _json_fields(metrics_pb2.HistogramDataPoint)
_SUMMARY_POINT_FIELDS = _json_fields(metrics_pb2.SummaryDataPoint)
_QUANTILE_FIELDS = _json_fields(metrics_pb2.SummaryDataPoint.ValueAtQuantile)
_KEY_VALUE_FIELDS = _json_fields(common_pb2.KeyValue)
_EMPTY: dict[str, Any] = {}


def _object(value: Any, fields: frozenset[str]) -> dict[str, Any]:
    """A JSON object of a message whose every key is a field's lowerCamel name; else `_Unusual`."""
    if type(value) is not dict or not fields.issuperset(value):
        raise _Unusual
    return value


def _array(message: dict[str, Any], key: str) -> list[Any]:
    value = message.get(key, ())
    if type(value) is list:
        return value
    if value == ():
        return []
    raise _Unusual


def _json_request(document: dict[str, Any], output: _Output) -> Converted:
    """Raises `_Unusual` at anything but the common form (module docstring)."""
    for resource_metrics in _array(_object(document, _REQUEST_FIELDS), "resourceMetrics"):
        _object(resource_metrics, _RESOURCE_METRICS_FIELDS)
        resource = _object(resource_metrics.get("resource", _EMPTY), _RESOURCE_FIELDS)
        resource_tags = _json_attributes(_array(resource, "attributes"))
        for scope_metrics in _array(resource_metrics, "scopeMetrics"):
            _object(scope_metrics, _SCOPE_METRICS_FIELDS)
            scope_name = _object(scope_metrics.get("scope", _EMPTY), _SCOPE_FIELDS).get("name", "")
            if type(scope_name) is not str:
                raise _Unusual
            tags = _ScopeTags(resource_tags, scope_name)
            for metric in _array(scope_metrics, "metrics"):
                _json_metric(output, _object(metric, _METRIC_FIELDS), tags)
    return output.converted()


def _json_metric(output: _Output, metric: dict[str, Any], scope: _ScopeTags) -> None:
    name = metric.get("name", "")
    kinds = [kind for kind in _DATA_FIELDS if kind in metric]
    if type(name) is not str or len(kinds) > 1:
        raise _Unusual
    if not kinds:
        return
    kind = kinds[0]
    points = _array(_object(metric[kind], _DATA_FIELDS[kind]), "dataPoints")
    if kind == "gauge" or kind == "sum":
        name_text = output.name_text(name)
        for point in points:
            tags = scope.of_json(output, _object(point, _NUMBER_POINT_FIELDS))
            if "asDouble" in point:
                if "asInt" in point:
                    raise _Unusual
                value: int | float | None = _double(point["asDouble"])
            elif "asInt" in point:
                value = _integer(point["asInt"], _INT64_MIN, _INT64_MAX)
            else:
                value = None
            output.number(name_text, value, _time(point), _flags(point), tags)
    elif kind == "histogram":
        names = _suffixed_names(output, name, "_bucket")
        for point in points:
            tags = scope.of_json(output, _object(point, _HISTOGRAM_POINT_FIELDS))
            count = _integer(point.get("count", 0), 0, _UINT64_MAX)
            total = _double(point["sum"]) if "sum" in point else None
            bounds = tuple(_double(bound) for bound in _array(point, "explicitBounds"))
            counts = [_integer(each, 0, _UINT64_MAX) for each in _array(point, "bucketCounts")]
            output.histogram(names, count, total, bounds, counts, _time(point), _flags(point), tags)
    elif kind == "summary":
        names = _suffixed_names(output, name, "")
        for point in points:
            tags = scope.of_json(output, _object(point, _SUMMARY_POINT_FIELDS))
            count = _integer(point.get("count", 0), 0, _UINT64_MAX)
            quantiles = [
                (_double(each.get("quantile", 0.0)), _double(each.get("value", 0.0)))
                for each in map(_quantile, _array(point, "quantileValues"))
            ]
            total = _double(point.get("sum", 0.0))
            output.summary(names, count, total, quantiles, _time(point), _flags(point), tags)
    else:
        output.skip_points("exponential_histogram", len(points))


def _quantile(value: Any) -> dict[str, Any]:
    return _object(value, _QUANTILE_FIELDS)


def _json_attributes(key_values: list[Any]) -> dict[str, str]:
    """JSON ``KeyValue`` objects as tags, as `_attributes` has them; `_Unusual` past the scalars."""
    tags: dict[str, str] = {}
    for key_value in key_values:
        _object(key_value, _KEY_VALUE_FIELDS)
        key = key_value.get("key", "")
        value = key_value.get("value", _EMPTY)
        if type(key) is not str or type(value) is not dict or len(value) > 1:
            raise _Unusual
        if not value:
            tags[key] = ""
            continue
        ((kind, scalar),) = value.items()
        if kind == "stringValue" and type(scalar) is str:
            tags[key] = scalar
        elif kind == "boolValue" and type(scalar) is bool:
            tags[key] = "true" if scalar else "false"
        elif kind == "intValue":
            tags[key] = str(_integer(scalar, _INT64_MIN, _INT64_MAX))
        elif kind == "doubleValue":
            tags[key] = number_text(_double(scalar))
        else:
            raise _Unusual
    return tags


def _integer(value: Any, least: int, greatest: int) -> int:
    """A 64-bit integer field: a JSON integer or a string of digits, in range; else `_Unusual`."""
    if type(value) is str and _DIGITS.fullmatch(value):
        value = int(value)
    if type(value) is not int or not least <= value <= greatest:
        raise _Unusual
    return value


def _double(value: Any) -> float:
    """A double field: a finite JSON number, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:
            return value  # type: ignore[no-any-return]
    elif kind is int:
        if -(2**53) <= value <= 2**53:
            return float(value)
    elif value in ("NaN", "Infinity", "-Infinity"):
        return float(value)
    raise _Unusual


def _time(point: dict[str, Any]) -> int:
    return _integer(point.get("timeUnixNano", 0), 0, _UINT64_MAX)


def _flags(point: dict[str, Any]) -> int:
    return _integer(point.get("flags", 0), 0, _UINT32_MAX)


# Numbers as text.


def _shortest_digits(value: float) -> tuple[str, str, int]:
    """``(sign, digits, point)``: a finite non-zero `value` is sign 0.digits x 10**point, in the
    fewest digits that read back as `value` (Python's repr, Go's and JavaScript's shortest form)."""
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    assert isinstance(exponent, int)
    return ("-" if sign else ""), text, exponent + len(text)


def positional_text(value: float) -> str:
    """A bound or a quantile as a tag: Go's ``strconv.FormatFloat(value, 'f', -1, 64)``, the
    shortest digits never with an exponent (``0.5``, ``1``, ``100000``, ``0.000001``), as
    Prometheus' OTLP translation writes ``le`` and ``quantile``; ``+Inf``, ``-Inf``, ``NaN``; zero
    is ``0``, either sign."""
    if value - value != 0.0:
        return "NaN" if value != value else "+Inf" if value > 0 else "-Inf"
    if value == 0.0:
        return "0"
    sign, digits, point = _shortest_digits(value)
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    if point > 0:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    return f"{sign}0.{'0' * -point}{digits}"


def number_text(value: float) -> str:
    """A double attribute as JavaScript writes a number (ECMAScript's Number::toString, Go's JSON):
    ``1``, ``0.5``, ``1e+21``, ``1.5e-7``; ``NaN``, ``Infinity``, ``-Infinity``; zero is ``0``."""
    if value - value != 0.0:
        return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "0"
    sign, digits, point = _shortest_digits(value)
    if -6 < point <= 21:
        return sign + positional_text(abs(value))
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


# google.rpc.Status


@cache
def _status_class() -> Any:
    """``google.rpc.Status`` from googleapis-common-protos where installed, else `_built_status_class`."""
    try:
        from google.rpc import status_pb2  # type: ignore[import-untyped]
    except ImportError:
        return _built_status_class()
    return status_pb2.Status


def _built_status_class() -> Any:
    """``google.rpc.Status`` (code, message, details) built from its descriptor, in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(any_pb2.DESCRIPTOR.serialized_pb))
    field = descriptor_pb2.FieldDescriptorProto
    status = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=[any_pb2.DESCRIPTOR.name],
    )
    status.message_type.add(
        name="Status",
        field=[
            field(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL, json_name="code"),
            field(
                name="message",
                number=2,
                type=field.TYPE_STRING,
                label=field.LABEL_OPTIONAL,
                json_name="message",
            ),
            field(
                name="details",
                number=3,
                type=field.TYPE_MESSAGE,
                label=field.LABEL_REPEATED,
                type_name=".google.protobuf.Any",
                json_name="details",
            ),
        ],
    )
    pool.Add(status)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
