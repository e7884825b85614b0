"""Tests for `ingest.remote_write`: Prometheus remote write 1.0 bodies to storage lines.

The fixtures are bodies the real Prometheus 2.42 sent (`tests/fixtures/record_remote_write.py`
records them).  The property tests hold the contract: `decode` returns a `Converted` or raises
`IngestError` for any bytes, and, for any ``WriteRequest``, gives what `reference` (the mapping
of PRODUCT.md written plainly over the spec's messages, without the module's views and memo) gives.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import cramjam
import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest import remote_write
from ingest.bodies import REMOTE_WRITE, Job, decode_job
from ingest.errors import IngestError
from ingest.remote_write import MAX_ERRORS, STALE_NAN, decode, inflate, messages
from ingest.sample import MAX_NAME, MAX_NS, MAX_TAG_VALUE, MAX_TAGS, MIN_NS, Converted, check_name, check_tags

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
LIMIT = 1 << 24
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
OTHER_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]  # Go's math.NaN()
MS = 1_700_000_000_123


def fixture(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as file:
        return file.read()


def snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def series(labels: dict[str, str] | list[tuple[str, str]], *samples: tuple[float, int]) -> Any:
    """A ``TimeSeries`` with these labels, in order, and ``(value, milliseconds)`` samples."""
    one = messages().TimeSeries()
    for name, value in labels.items() if isinstance(labels, dict) else labels:
        one.labels.add(name=name, value=value)
    for value, ms in samples:
        one.samples.add(value=value, timestamp=ms)
    return one


def body(*all_series: Any, metadata: int = 0) -> bytes:
    """A snappy-compressed ``WriteRequest`` of these series and `metadata` metadata entries."""
    request = messages().WriteRequest()
    request.timeseries.extend(all_series)
    for number in range(metadata):
        request.metadata.add(type=1, metric_family_name=f"m{number}", help="help", unit="")
    return snappy(request.SerializeToString())


def line(name: str, value: float, ms: int, tags: dict[str, str]) -> str:
    return ujson.dumps({"name": name, "value": value, "timestamp": ms * 1_000_000, "tags": tags})


def reference(request: Any) -> Converted:
    """PRODUCT.md's mapping of a parsed ``WriteRequest``, written plainly over the spec's messages."""
    lines: list[str] = []
    errors: list[tuple[int, str]] = []
    skipped: dict[str, int] = {}
    rejected = 0
    index = 0

    def skip(reason: str, count: int = 1) -> None:
        if count:
            skipped[reason] = skipped.get(reason, 0) + count

    def reject(reason: str) -> None:
        nonlocal rejected
        rejected += 1
        if len(errors) < MAX_ERRORS:
            errors.append((index, reason))

    for one in request.timeseries:
        skip("exemplar", len(one.exemplars))
        skip("histogram", len(one.histograms))
        pairs = [(label.name, label.value) for label in one.labels]
        names = [name for name, _ in pairs]
        problem = None
        tags = {name: value for name, value in pairs if value and name != "__name__"}
        name = dict(pairs).get("__name__", "")
        duplicates = [name for name in names if names.count(name) > 1]
        if duplicates:
            problem = f"label {duplicates[0][:64]!r} given twice"
        elif not name:
            problem = "series without a __name__ label"
        else:
            try:
                check_name(name)
                check_tags(tags)
            except IngestError as error:
                problem = error.detail
        for sample in one.samples:
            if problem is not None:
                reject(problem)
            elif math.isnan(sample.value):
                skip("stale" if struct.pack("<d", sample.value) == struct.pack("<Q", STALE_NAN) else "nan")
            elif math.isinf(sample.value):
                skip("infinity")
            elif not MIN_NS <= sample.timestamp * 1_000_000 <= MAX_NS:
                reject("timestamp: out of range (1677-09-21 to 2262-04-11)")
            else:
                lines.append(line(name, sample.value, sample.timestamp, tags))
            index += 1
    return Converted(lines, rejected, errors, skipped)


class FixtureTests(SynchronousTestCase):
    """Bodies as the real Prometheus sent them."""

    def test_samples(self) -> None:
        """A batch of Prometheus scraping itself: each sample is one line, NaNs skipped, known series."""
        converted = decode(fixture("remote_write.snappy"), LIMIT)
        self.assertEqual((len(converted.lines), converted.rejected, converted.errors), (351, 0, []))
        self.assertEqual(converted.skipped, {"nan": 26})
        stored = [json.loads(text) for text in converted.lines]
        for sample, text in zip(stored, converted.lines, strict=True):
            self.assertEqual(ujson.dumps(sample), text, "the form ujson.dumps writes, keys in order")
            self.assertEqual(sample["timestamp"] % 1_000_000, 0, "milliseconds in nanoseconds")
            self.assertIsInstance(sample["value"], float)
            self.assertEqual(sample["tags"]["job"], "prometheus")
        up = [sample for sample in stored if sample["name"] == "up"]
        self.assertEqual(len(up), 1)
        self.assertEqual(up[0]["value"], 1.0)
        self.assertEqual(sorted(up[0]["tags"]), ["instance", "job"])
        self.assertRegex(up[0]["tags"]["instance"], r"^127\.0\.0\.1:\d+$")
        (build,) = [sample for sample in stored if sample["name"] == "prometheus_build_info"]
        self.assertEqual(build["tags"]["version"], "2.42.0+ds")
        self.assertEqual(
            sorted(build["tags"]),
            ["branch", "goarch", "goos", "goversion", "instance", "job", "revision", "version"],
        )
        quantiles = [s["tags"]["quantile"] for s in stored if s["name"] == "go_gc_duration_seconds"]
        self.assertEqual(quantiles, ["0", "0.25", "0.5", "0.75", "1"])
        self.assertEqual(
            converted,
            reference(messages().WriteRequest.FromString(inflate(fixture("remote_write.snappy"), LIMIT))),
        )

    def test_metadata_only(self) -> None:
        """Prometheus' metadata requests carry no series: nothing stored, nothing counted."""
        data = inflate(fixture("remote_write_metadata.snappy"), LIMIT)
        request = messages().WriteRequest.FromString(data)
        self.assertEqual((len(request.timeseries), len(request.metadata) > 100), (0, True))
        (counter,) = [
            entry
            for entry in request.metadata
            if entry.metric_family_name == "prometheus_http_requests_total"
        ]
        self.assertEqual(counter.type, messages().MetricMetadata.MetricType.Value("COUNTER"))
        self.assertEqual(decode(fixture("remote_write_metadata.snappy"), LIMIT), Converted([], 0, [], {}))

    def test_staleness_markers(self) -> None:
        """A scrape target gone: every series gets Prometheus' staleness marker, skipped as ``stale``."""
        converted = decode(fixture("remote_write_stale.snappy"), LIMIT)
        self.assertEqual((converted.lines, converted.rejected), ([], 0))
        self.assertEqual(converted.skipped, {"stale": 426})

    def test_through_the_parse_pool_entry(self) -> None:
        """`bodies.decode_job`, which the route runs in the pool, stores the lines and counts the skips."""
        decoded = decode_job(Job(REMOTE_WRITE, fixture("remote_write.snappy"), 0, max_body=LIMIT))
        self.assertEqual((decoded.accepted, decoded.rejected, decoded.skipped), (351, 0, 26))
        self.assertEqual(decoded.reasons, {"nan": 26})
        self.assertEqual(
            decoded.data.decode().splitlines(), decode(fixture("remote_write.snappy"), LIMIT).lines
        )

    def test_headers(self) -> None:
        """What Prometheus 2.42 sends with a body: what the route must take (no 415)."""
        with open(os.path.join(FIXTURES, "remote_write.headers.json"), encoding="utf-8") as file:
            headers = json.load(file)
        self.assertEqual(headers["Content-Encoding"], "snappy")
        self.assertEqual(headers["Content-Type"], "application/x-protobuf")
        self.assertEqual(headers["X-Prometheus-Remote-Write-Version"], "0.1.0")


class MappingTests(SynchronousTestCase):
    def test_sample(self) -> None:
        """``__name__`` is the name, the other labels the tags in the order sent, ms become ns."""
        converted = decode(
            body(
                series(
                    {"__name__": "http_requests_total", "path": "/a", "code": "200"}, (1.5, MS), (2, MS + 1)
                )
            ),
            LIMIT,
        )
        self.assertEqual(
            converted.lines,
            [
                '{"name":"http_requests_total","value":1.5,"timestamp":1700000000123000000,'
                '"tags":{"path":"\\/a","code":"200"}}',
                line("http_requests_total", 2.0, MS + 1, {"path": "/a", "code": "200"}),
            ],
        )
        self.assertEqual((converted.rejected, converted.errors, converted.skipped), (0, [], {}))

    def test_no_tags(self) -> None:
        """A series of its name alone has empty tags; ``__name__`` may come anywhere."""
        converted = decode(
            body(series([("a", "1"), ("__name__", "m")], (0.0, 0)), series({"__name__": "n"}, (-0.0, -1))),
            LIMIT,
        )
        self.assertEqual(converted.lines, [line("m", 0.0, 0, {"a": "1"}), line("n", -0.0, -1, {})])

    def test_values_not_stored(self) -> None:
        """Staleness markers, other NaNs and infinities are skipped and counted by reason, in any series."""
        converted = decode(
            body(
                series({"__name__": "m"}, (STALE, MS), (math.nan, MS), (OTHER_NAN, MS), (math.inf, MS)),
                series({"__name__": "n"}, (-math.inf, MS), (1e308, MS), (STALE, MS)),
            ),
            LIMIT,
        )
        self.assertEqual(converted.lines, [line("n", 1e308, MS, {})])
        self.assertEqual(converted.skipped, {"stale": 2, "nan": 2, "infinity": 2})
        self.assertEqual((converted.rejected, converted.errors), (0, []))

    def test_exemplars_and_histograms(self) -> None:
        """Exemplars and native histogram samples are counted as skipped; the float samples stay."""
        one = series({"__name__": "m"}, (1, MS))
        one.exemplars.add(value=0.5, timestamp=MS).labels.add(name="trace_id", value="abc")
        one.exemplars.add(value=0.7, timestamp=MS)
        one.histograms.add()
        other = series({"__name__": "h"})
        for _ in range(3):
            other.histograms.add()
        converted = decode(body(one, other), LIMIT)
        self.assertEqual(converted.lines, [line("m", 1.0, MS, {})])
        self.assertEqual(converted.skipped, {"exemplar": 2, "histogram": 4})

    def test_metadata_only(self) -> None:
        """Metadata alone, or an empty request, stores nothing."""
        self.assertEqual(decode(body(metadata=3), LIMIT), Converted([], 0, [], {}))
        self.assertEqual(decode(snappy(b""), LIMIT), Converted([], 0, [], {}))
        self.assertEqual(decode(body(series({"__name__": "m"})), LIMIT), Converted([], 0, [], {}))

    def test_empty_label_values_dropped(self) -> None:
        """An empty label value is no label, as Prometheus reads it."""
        converted = decode(body(series([("__name__", "m"), ("a", ""), ("b", "2")], (1, MS))), LIMIT)
        self.assertEqual(converted.lines, [line("m", 1.0, MS, {"b": "2"})])

    def test_rejected_series(self) -> None:
        """A series that cannot be stored rejects each of its samples, by index in the request."""
        converted = decode(
            body(
                series({"__name__": "ok"}, (1, MS), (math.nan, MS)),
                series({"job": "x"}, (1, MS), (2, MS)),
                series({"__name__": ""}, (1, MS)),
                series([("__name__", "m"), ("a", "1"), ("a", "2")], (1, MS)),
                series({"__name__": "bad\nname"}, (1, MS)),
                series({"__name__": "m", "": "v"}, (1, MS)),
                series({"__name__": "ok"}, (3, MS)),
            ),
            LIMIT,
        )
        self.assertEqual(converted.lines, [line("ok", 1.0, MS, {}), line("ok", 3.0, MS, {})])
        self.assertEqual(converted.skipped, {"nan": 1})
        self.assertEqual(converted.rejected, 6)
        self.assertEqual(
            converted.errors,
            [
                (2, "series without a __name__ label"),
                (3, "series without a __name__ label"),
                (4, "series without a __name__ label"),
                (5, "label 'a' given twice"),
                (6, "name: control characters are not allowed"),
                (7, "tags: keys must have 1 to 256 characters"),
            ],
        )

    def test_rejected_again(self) -> None:
        """A rejected label set is rejected in every request (the memo keeps only what is stored)."""
        bad = body(series({"job": "x"}, (1, MS)))
        for _ in range(3):
            self.assertEqual(decode(bad, LIMIT).errors, [(0, "series without a __name__ label")])

    def test_timestamp_range(self) -> None:
        """Timestamps within `ingest.sample`'s range are stored; one millisecond past it is rejected."""
        first, last = -(-MIN_NS // 1_000_000), MAX_NS // 1_000_000
        converted = decode(
            body(
                series({"__name__": "m"}, (1, first - 1), (1, first), (1, last), (1, last + 1), (1, -(2**63)))
            ),
            LIMIT,
        )
        self.assertEqual(converted.lines, [line("m", 1.0, first, {}), line("m", 1.0, last, {})])
        reason = "timestamp: out of range (1677-09-21 to 2262-04-11)"
        self.assertEqual(converted.errors, [(0, reason), (3, reason), (4, reason)])

    def test_name_and_tag_limits(self) -> None:
        """The sample's limits, each at N and N+1: name length, tag count, tag value length."""

        def stored(labels: dict[str, str]) -> bool:
            return bool(decode(body(series(labels, (1, MS))), LIMIT).lines)

        self.assertTrue(stored({"__name__": "n" * MAX_NAME}))
        self.assertFalse(stored({"__name__": "n" * (MAX_NAME + 1)}))
        self.assertTrue(stored({"__name__": "m", **{f"t{i}": "v" for i in range(MAX_TAGS)}}))
        self.assertFalse(stored({"__name__": "m", **{f"t{i}": "v" for i in range(MAX_TAGS + 1)}}))
        self.assertTrue(stored({"__name__": "m", "t": "v" * MAX_TAG_VALUE}))
        self.assertFalse(stored({"__name__": "m", "t": "v" * (MAX_TAG_VALUE + 1)}))

    def test_errors_listed_up_to_the_limit(self) -> None:
        """Every rejected sample is counted; the first `MAX_ERRORS` are listed."""
        many = [(1.0, MS)] * (MAX_ERRORS + 5)
        converted = decode(body(series({"job": "x"}, *many), series({"job": "y"}, (1, MS))), LIMIT)
        self.assertEqual(converted.rejected, MAX_ERRORS + 6)
        self.assertEqual([index for index, _ in converted.errors], list(range(MAX_ERRORS)))

    def test_same_series_many_requests(self) -> None:
        """A label set seen before (the memo) maps as the first time did, samples and all."""
        labels = {"__name__": "m", "instance": "a:1", "job": "j"}
        for ms in range(MS, MS + 3):
            converted = decode(body(series(labels, (ms / 7, ms))), LIMIT)
            self.assertEqual(converted.lines, [line("m", ms / 7, ms, {"instance": "a:1", "job": "j"})])

    def test_other_encodings(self) -> None:
        """Bytes of shapes Prometheus does not write map as the spec's message of them does."""
        name = field(1, b"\x0a\x08__name__\x12\x01m")
        value = b"\x09" + struct.pack("<d", 1.5)
        stamp = b"\x10" + varint(MS)
        shapes = {
            "fields reversed": [name, field(2, stamp + value)],
            "value twice": [name, field(2, b"\x09" + struct.pack("<d", 9.0) + value + stamp)],
            "timestamp twice": [name, field(2, value + b"\x10\x01" + stamp)],
            "timestamp's varint padded": [name, field(2, value + b"\x10" + varint(MS, 2))],
            "timestamp alone, padded": [name, field(2, b"\x10" + varint(MS, 1))],
            "timestamp 0 left out": [name, field(2, value)],
            "empty sample": [name, field(2, b"")],
            "unknown field in the sample": [name, field(2, value + stamp + b"\x18\x01")],
            "sample's length padded": [name, field(2, value + stamp, 1)],
            "labels after the samples": [field(2, value + stamp), name, field(1, b"\x0a\x01a\x12\x01b")],
            "a label of 128 bytes": [
                name,
                field(1, b"\x0a\x01t\x12\x7c" + b"v" * 124),
                field(2, value + stamp),
            ],
            "unknown field in the series": [name, field(2, value + stamp), b"\x28\x01"],
            "exemplar after the samples": [name, field(2, value + stamp), field(3, b"\x11" + bytes(8))],
            "empty label": [name, field(1, b""), field(2, value + stamp)],
        }
        for shape, fields in shapes.items():
            data = field(1, b"".join(fields))
            expected = reference(messages().WriteRequest.FromString(data))
            self.assertEqual(len(expected.lines) + expected.rejected, 1, shape)
            self.assertEqual(decode(snappy(data), LIMIT), expected, shape)


class BodyTests(SynchronousTestCase):
    """The snappy block and its limit; bodies that are not a ``WriteRequest``."""

    def assert_refused(self, data: bytes, limit: int, status: int, error: str) -> IngestError:
        with self.assertRaises(IngestError) as caught:
            decode(data, limit)
        self.assertEqual((caught.exception.status, caught.exception.error), (status, error))
        return caught.exception

    def test_limit(self) -> None:
        """A body inflating to `max_body` bytes is read; one byte less of limit is 413 and closes."""
        data = body(series({"__name__": "m", "t": "x" * 100}, (1, MS)))
        size = len(inflate(data, LIMIT))
        self.assertEqual(len(decode(data, size).lines), 1)
        refused = self.assert_refused(data, size - 1, 413, "body too large")
        self.assertTrue(refused.close)
        self.assertEqual(refused.detail, f"over {size - 1} bytes after decompression")

    def test_limit_read_from_the_header(self) -> None:
        """A header declaring too much is 413 before anything is inflated (the data here is garbage)."""
        self.assert_refused(b"\xff\xff\xff\xff\x0f" + b"\x00" * 10, LIMIT, 413, "body too large")
        self.assert_refused(b"\x81\x80\x80\x80\x00", 0, 413, "body too large")

    def test_header_that_lies(self) -> None:
        """A snappy block whose data inflates to another length than declared is 400."""
        data = snappy(b"\x0a\x00" * 50)
        self.assertEqual(data[0], 100)
        self.assert_refused(bytes([101]) + data[1:], LIMIT, 400, "malformed snappy")
        self.assert_refused(bytes([99]) + data[1:], LIMIT, 400, "malformed snappy")

    def test_not_snappy(self) -> None:
        """No header, a header that never ends, or data that is not snappy: 400."""
        for data in (b"", b"\x80", b"\x80\x80\x80\x80\x80\x01", b"\x05abc", b'{"json": true}', b"\xff" * 6):
            self.assert_refused(data, LIMIT, 400, "malformed snappy")

    def test_snappy_framed_format_refused(self) -> None:
        """The snappy *framed* format (``Content-Encoding: snappy`` of some clients) is not the block."""
        framed = bytes(cramjam.snappy.compress(messages().WriteRequest().SerializeToString() + b"\x0a\x00"))
        with self.assertRaises(IngestError) as caught:
            decode(framed, LIMIT)
        self.assertEqual(caught.exception.status, 400)

    def test_not_a_write_request(self) -> None:
        """Snappy data that is not a WriteRequest is 400 ``malformed remote write``."""
        for data in (b"\xff\xff", b"\x0a\x05\x0a", b"\x0b", b"\x0a\x02\x0a\x05"):
            self.assert_refused(snappy(data), LIMIT, 400, "malformed remote write")

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 in a label, or in metadata the mapping never reads, is not a WriteRequest."""
        label = b"\x0a\x08__name__\x12\x02\xff\xfe"
        sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10\x01"
        one = b"\x0a" + bytes([len(label)]) + label + b"\x12" + bytes([len(sample)]) + sample
        request = b"\x0a" + bytes([len(one)]) + one
        self.assert_refused(snappy(request), LIMIT, 400, "malformed remote write")
        metadata = b"\x1a\x04\x22\x02\xff\xfe"
        self.assert_refused(snappy(metadata), LIMIT, 400, "malformed remote write")
        self.assertEqual(
            decode(snappy(request.replace(b"\xff\xfe", b"ok")), LIMIT).lines, [line("ok", 1.0, 1, {})]
        )


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
LABEL_NAMES = st.one_of(st.sampled_from(["__name__", "job", "instance", "le", ""]), TEXT)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, STALE, OTHER_NAN, math.nan, math.inf, -math.inf]),
)
TIMESTAMPS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, MS, MS + 1, -(-MIN_NS // 1_000_000) - 1, MAX_NS // 1_000_000 + 1]),
)


@st.composite
def write_requests(draw: st.DrawFn) -> Any:
    request = messages().WriteRequest()
    for _ in range(draw(st.integers(0, 4))):
        labels = draw(st.lists(st.tuples(LABEL_NAMES, st.one_of(st.just(""), TEXT)), max_size=5))
        if draw(st.booleans()):
            labels.insert(draw(st.integers(0, len(labels))), ("__name__", draw(TEXT)))
        one = series(labels, *draw(st.lists(st.tuples(VALUES, TIMESTAMPS), max_size=4)))
        for _ in range(draw(st.integers(0, 2))):
            one.exemplars.add(value=draw(VALUES))
        for _ in range(draw(st.integers(0, 2))):
            one.histograms.add()
        request.timeseries.append(one)
    for _ in range(draw(st.integers(0, 2))):
        request.metadata.add(metric_family_name=draw(TEXT), help=draw(TEXT))
    return request


def varint(number: int, padding: int = 0) -> bytes:
    """`number` as a protobuf varint (two's complement in 64 bits), `padding` bytes longer than needed
    (at most ten bytes in all)."""
    number &= 2**64 - 1
    out = bytearray()
    while number >= 0x80:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    padding = min(padding, 10 - len(out))
    if padding:
        out[-1] |= 0x80
        out.extend(b"\x80" * (padding - 1) + b"\x00")
    return bytes(out)


def field(number: int, payload: bytes, padding: int = 0) -> bytes:
    """A length-delimited field, its length's varint `padding` bytes longer than needed."""
    return varint(number << 3 | 2) + varint(len(payload), padding) + payload


@st.composite
def encoded_samples(draw: st.DrawFn) -> bytes:
    """A ``Sample``'s bytes, of the shapes a sender may write: each field left out when zero or not,
    the fields in either order, one given twice (the last counts), a varint longer than needed, an
    unknown field."""
    value, ms = draw(VALUES), draw(TIMESTAMPS)
    parts = []
    if value != 0.0 or struct.pack("<d", value) != bytes(8) or draw(st.booleans()):
        parts.append(b"\x09" + struct.pack("<d", value))
    if ms != 0 or draw(st.booleans()):
        parts.append(b"\x10" + varint(ms, draw(st.sampled_from([0, 0, 0, 1, 3]))))
    if draw(st.integers(0, 9)) == 0:
        parts.reverse()
    if draw(st.integers(0, 9)) == 0:
        parts.insert(0, b"\x09" + struct.pack("<d", draw(VALUES)))
    if draw(st.integers(0, 9)) == 0:
        parts.insert(0, b"\x10" + varint(draw(TIMESTAMPS)))
    if draw(st.integers(0, 9)) == 0:
        parts.insert(draw(st.integers(0, len(parts))), b"\x1a\x02ab")  # field 3: unknown to Sample
    return b"".join(parts)


@st.composite
def encoded_labels(draw: st.DrawFn) -> bytes:
    """A ``Label``'s bytes: empty strings left out or not, fields in either order, long ones too."""
    name = draw(st.one_of(LABEL_NAMES, st.just("__name__")))
    value = draw(
        st.one_of(st.just(""), TEXT, st.builds(str.__mul__, st.sampled_from("vé"), st.integers(120, 140)))
    )
    parts = [
        b"\x0a" + varint(len(name.encode())) + name.encode() if name or draw(st.booleans()) else b"",
        b"\x12" + varint(len(value.encode())) + value.encode() if value or draw(st.booleans()) else b"",
    ]
    if draw(st.integers(0, 9)) == 0:
        parts.reverse()
    return b"".join(parts)


@st.composite
def encoded_write_requests(draw: st.DrawFn) -> bytes:
    """A ``WriteRequest``'s bytes written field by field: most series as Prometheus writes them
    (labels, then samples), others with their fields interleaved, exemplars, histograms, unknown
    fields, lengths longer than needed."""
    request = []
    for _ in range(draw(st.integers(0, 4))):
        labels = [field(1, label) for label in draw(st.lists(encoded_labels(), max_size=4))]
        if draw(st.booleans()):
            name = draw(st.sampled_from(["m", "up", "x" * 130]))
            labels.insert(0, field(1, b"\x0a\x08__name__\x12" + varint(len(name)) + name.encode()))
        padding = draw(st.sampled_from([0, 0, 0, 0, 1]))
        samples = [field(2, sample, padding) for sample in draw(st.lists(encoded_samples(), max_size=4))]
        others = []
        for _ in range(draw(st.integers(0, 1))):
            others.append(field(3, b"\x11" + struct.pack("<d", draw(VALUES)) + b"\x18\x05"))  # an exemplar
        for _ in range(draw(st.integers(0, 1))):
            others.append(field(4, draw(st.sampled_from([b"", b"\x1a\x82\x01" + b"h" * 130]))))  # a histogram
        if draw(st.integers(0, 9)) == 0:
            others.append(b"\x28\x01")  # field 5, a varint: unknown to TimeSeries
        fields = labels + samples + others
        if draw(st.integers(0, 4)) == 0:
            fields = draw(st.permutations(fields))
        request.append(field(1, b"".join(fields), draw(st.sampled_from([0, 0, 0, 1]))))
    return b"".join(request)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(write_requests())
    def test_as_the_reference_maps(self, request: Any) -> None:
        """Any WriteRequest decodes to what the plain reference mapping gives, twice (the memo)."""
        data = snappy(request.SerializeToString())
        expected = reference(request)
        self.assertEqual(decode(data, LIMIT), expected)
        self.assertEqual(decode(data, LIMIT), expected)

    @settings(max_examples=500, deadline=None)
    @given(encoded_write_requests())
    def test_any_encoding_as_the_reference_maps(self, data: bytes) -> None:
        """Bytes of any shape a sender may write map as the reference maps the spec's message of them.

        The module reads the shape Prometheus writes byte by byte and any other through the messages:
        both must give what the reference gives, the memo empty and full.
        """
        expected = reference(messages().WriteRequest.FromString(data))
        remote_write._series_text.cache_clear()
        self.assertEqual(decode(snappy(data), LIMIT), expected)
        self.assertEqual(decode(snappy(data), LIMIT), expected)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes(self, data: bytes) -> None:
        """Any body, and any snappy block of any bytes: a `Converted` or an `IngestError`, nothing else."""
        for candidate in (data, snappy(data)):
            try:
                self.assertIsInstance(decode(candidate, LIMIT), Converted)
            except IngestError as error:
                self.assertIn(error.status, (400, 413))

    @settings(max_examples=300, deadline=None)
    @given(write_requests(), st.data())
    def test_cut_or_altered(self, request: Any, data: st.DataObject) -> None:
        """A real WriteRequest's bytes cut short or with one byte changed: a `Converted` or a 400."""
        encoded = request.SerializeToString()
        if not encoded:
            return
        position = data.draw(st.integers(0, len(encoded) - 1))
        for candidate in (
            encoded[:position],
            encoded[:position] + bytes([data.draw(st.integers(0, 255))]) + encoded[position + 1 :],
        ):
            try:
                self.assertIsInstance(decode(snappy(candidate), LIMIT), Converted)
            except IngestError as error:
                self.assertEqual((error.status, error.error), (400, "malformed remote write"))

    def test_messages_built_once(self) -> None:
        """`messages` builds the classes once; a new parse pool would make new classes."""
        self.assertIs(messages(), messages())
        self.assertIs(remote_write.messages().Label, messages().Label)
