"""Tests for `ingest.sample`: validation of one JSON sample or of its parts, and its storage encoding.

Each rule of PRODUCT.md's sample definition has its accepted and refused
cases here; each bound is checked at N (accepted) and N+1 (refused).
"""

from __future__ import annotations

import json
import math
from typing import Any

import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.bodies import JSON, MSGSPEC, decode_metrics
from ingest.errors import IngestError
from ingest.sample import (
    MAX_NAME,
    MAX_NS,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    MIN_NS,
    LineEncoder,
    Sample,
    encode,
    from_json,
    make,
    storage_line,
)

NOW = 1_700_000_000_123_456_789
ABSENT = object()

MAX_SECONDS = MAX_NS // 1_000_000_000  # 9223372036, in the year 2262
MIN_SECONDS = -MAX_SECONDS  # in the year 1677


def obj(**fields: Any) -> dict[str, Any]:
    """A valid sample object with `fields` replaced; a field set to `ABSENT` is left out."""
    base: dict[str, Any] = {"name": "cpu.load", "value": 0.42}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ABSENT}


def from_json_by_msgspec(value: Any, now_ns: int) -> Sample:
    """`from_json` through the msgspec path: `value` written as JSON, the only sample of an array
    decoded by `bodies.decode_metrics`, and its stored line read back, or its error raised."""
    body = json.dumps([value]).encode("utf-8", "surrogatepass")
    decoded = decode_metrics(JSON, body, now_ns, MSGSPEC)
    if decoded.errors:
        raise IngestError(400, "invalid sample", decoded.errors[0][1])
    return Sample(**json.loads(decoded.data))


class FromJsonTests(SynchronousTestCase):
    """`from_json` accepts exactly the samples PRODUCT.md describes (run again on the msgspec path by
    `FromJsonMsgspecTests`)."""

    from_json = staticmethod(from_json)

    def assert_refused(self, value: Any, mentions: str = "") -> IngestError:
        error = self.assertRaises(IngestError, self.from_json, value, NOW)
        self.assertEqual((error.status, error.error), (400, "invalid sample"), value)
        self.assertFalse(error.close, "an invalid sample does not end the connection")
        self.assertIn(mentions, error.detail)
        return error

    def test_valid(self) -> None:
        """A full sample becomes a `Sample` with the timestamp in integer nanoseconds."""
        sample = self.from_json(
            {"name": "cpu.load", "value": 0.42, "timestamp": 1700000000.25, "tags": {"host": "a"}}, NOW
        )
        self.assertEqual(sample, Sample("cpu.load", 0.42, 1_700_000_000_250_000_000, {"host": "a"}))

    def test_not_an_object(self) -> None:
        """Anything but a JSON object is refused."""
        for value in [None, 1, 1.5, "cpu", ["cpu", 1], True]:
            self.assert_refused(value, "object")

    def test_unknown_keys(self) -> None:
        """A key but name, value, timestamp and tags is refused and named: a typo cannot drop data."""
        self.assert_refused(obj(time=1700000000), "'time'")
        self.assert_refused(obj(Name="x"), "'Name'")
        self.assert_refused(obj(tag={"a": "b"}), "'tag'")

    def test_name_refused(self) -> None:
        """A missing, empty or non-string name is refused."""
        for name in [ABSENT, "", None, 5, 1.5, True, ["cpu"], {"a": "b"}]:
            self.assert_refused(obj(name=name), "name")

    def test_name_length(self) -> None:
        """A name of `MAX_NAME` (256) characters passes; 257 are refused; length counts characters."""
        self.assertEqual(MAX_NAME, 256)
        self.assertEqual(self.from_json(obj(name="n" * 256), NOW).name, "n" * 256)
        self.assertEqual(self.from_json(obj(name="é" * 256), NOW).name, "é" * 256)
        self.assert_refused(obj(name="n" * 257), "name")
        self.assert_refused(obj(name="é" * 257), "name")

    def test_name_characters(self) -> None:
        """Printable Unicode is allowed in a name, including spaces, slashes and emoji."""
        for name in ["cpu load", "disk/sda1", "température", "温度", "\U0001f600", "a\u2028b"]:
            self.assertEqual(self.from_json(obj(name=name), NOW).name, name)

    def test_name_control_characters(self) -> None:
        """C0 controls, DEL, C1 controls and lone surrogates in a name are refused."""
        for char in [
            "\x00",
            "\t",
            "\n",
            "\r",
            "\x1b",
            "\x1f",
            "\x7f",
            "\x80",
            "\x85",
            "\x9f",
            "\ud800",
            "\udfff",
        ]:
            self.assert_refused(obj(name="cpu" + char + "load"), "name")
            self.assert_refused(obj(name=char), "name")

    def test_value_numbers(self) -> None:
        """Integers and finite floats are values, kept with their type."""
        for value in [0, 1, -5, 0.0, -0.5, 0.42, 1e300, 5e-324]:
            sample = self.from_json(obj(value=value), NOW)
            self.assertEqual(sample.value, value)
            self.assertIs(type(sample.value), type(value))

    def test_value_refused(self) -> None:
        """A boolean, a string, null, an array or an object is not a value."""
        for value in [True, False, "1", "0.42", None, [1], {"v": 1}]:
            self.assert_refused(obj(value=value), "value")

    def test_value_missing(self) -> None:
        """A sample without a value is refused."""
        self.assert_refused(obj(value=ABSENT), "value: missing")

    def test_value_not_finite(self) -> None:
        """NaN and the infinities are refused."""
        for value in [math.nan, math.inf, -math.inf]:
            self.assert_refused(obj(value=value), "finite")

    def test_value_integer_range(self) -> None:
        """Integers from -2**63 (int64) to 2**64-1 (uint64, line protocol's ``u``) pass; one beyond is not."""
        for value in [-(2**63), 2**63 - 1, 2**63, 2**64 - 1]:
            self.assertEqual(self.from_json(obj(value=value), NOW).value, value)
        for value in [-(2**63) - 1, 2**64, 10**30]:
            self.assert_refused(obj(value=value), "64-bit")

    def test_timestamp_absent(self) -> None:
        """Without a timestamp, the sample takes the time of receipt (`now_ns`)."""
        self.assertEqual(self.from_json(obj(), NOW).timestamp, NOW)

    def test_timestamp_integer_seconds(self) -> None:
        """Integer seconds become integer nanoseconds, before 1970 too; the whole seconds of InfluxDB's
        range are the edges."""
        self.assertEqual(self.from_json(obj(timestamp=1700000000), NOW).timestamp, 1_700_000_000_000_000_000)
        self.assertEqual(self.from_json(obj(timestamp=0), NOW).timestamp, 0)
        self.assertEqual(self.from_json(obj(timestamp=-1), NOW).timestamp, -1_000_000_000)
        self.assertEqual(
            self.from_json(obj(timestamp=MAX_SECONDS), NOW).timestamp, MAX_SECONDS * 1_000_000_000
        )
        self.assertEqual(
            self.from_json(obj(timestamp=MIN_SECONDS), NOW).timestamp, MIN_SECONDS * 1_000_000_000
        )
        for seconds in (MAX_SECONDS + 1, MIN_SECONDS - 1):
            self.assert_refused(obj(timestamp=seconds), "timestamp: out of range (1677-09-21 to 2262-04-11)")

    def test_timestamp_fractional_seconds(self) -> None:
        """Fractional seconds keep the digits the client wrote, without binary rounding."""
        for seconds, ns in [
            (1700000000.25, 1_700_000_000_250_000_000),
            (1700000000.1, 1_700_000_000_100_000_000),
            (1700000000.001, 1_700_000_000_001_000_000),
            (1700000000.0, 1_700_000_000_000_000_000),
            (0.5, 500_000_000),
            (0.1, 100_000_000),
            (0.000001, 1_000),
            (1e-05, 10_000),
            (1.5e-07, 150),
            (-0.5, -500_000_000),
            (-1.25, -1_250_000_000),
            (-86400.000001, -86_400_000_001_000),
            (-1.5e-07, -150),
            (-0.0, 0),
        ]:
            self.assertEqual(self.from_json(obj(timestamp=seconds), NOW).timestamp, ns, seconds)

    def test_timestamp_fractional_edge(self) -> None:
        """Fractions of the last int64 second pass up to its last nanosecond; past it they are refused."""
        self.assertEqual(
            self.from_json(obj(timestamp=9223372036.854774), NOW).timestamp, 9_223_372_036_854_774_000
        )
        self.assertEqual(
            self.from_json(obj(timestamp=9223372036.5), NOW).timestamp, 9_223_372_036_500_000_000
        )
        self.assert_refused(obj(timestamp=math.nextafter(9223372036.854774, math.inf)), "timestamp")
        self.assert_refused(obj(timestamp=9223372036.9), "timestamp")
        self.assert_refused(obj(timestamp=9223372037.0), "timestamp")
        self.assertEqual(
            self.from_json(obj(timestamp=-9223372036.854774), NOW).timestamp, -9_223_372_036_854_774_000
        )
        self.assert_refused(obj(timestamp=math.nextafter(-9223372036.854774, -math.inf)), "timestamp")
        self.assert_refused(obj(timestamp=-9223372037.0), "timestamp")

    def test_timestamp_refused(self) -> None:
        """Too early, too late, non-finite, boolean, string or structured timestamps are refused."""
        for seconds in [
            -(10**20),
            -1e20,
            10**20,
            1e20,
            math.inf,
            -math.inf,
            math.nan,
            True,
            False,
            "1700000000",
            [1700000000],
            {"s": 1},
        ]:
            self.assert_refused(obj(timestamp=seconds), "timestamp")

    def test_tags_absent_or_empty(self) -> None:
        """No tags, or an empty object, give an empty tag set."""
        self.assertEqual(self.from_json(obj(), NOW).tags, {})
        self.assertEqual(self.from_json(obj(tags={}), NOW).tags, {})

    def test_tags(self) -> None:
        """String-to-string tags are kept as given."""
        tags = {"host": "a", "region": "eu-west", "empty": "", "unicode": "température"}
        self.assertEqual(self.from_json(obj(tags=tags), NOW).tags, tags)

    def test_tags_not_an_object(self) -> None:
        """Tags that are not an object (even an empty or false one) are refused."""
        for tags in [["host", "a"], "host=a", 1, [], "", 0, False, True]:
            self.assert_refused(obj(tags=tags), "tags")

    def test_tag_values_must_be_strings(self) -> None:
        """A tag value that is not a string is refused."""
        for value in [1, 1.5, None, True, ["a"], {"a": "b"}]:
            self.assert_refused(obj(tags={"host": "a", "bad": value}), "tags")

    def test_tag_count(self) -> None:
        """`MAX_TAGS` tags pass; one more is refused."""
        tags = {f"k{index}": "v" for index in range(MAX_TAGS)}
        self.assertEqual(self.from_json(obj(tags=tags), NOW).tags, tags)
        self.assert_refused(obj(tags={**tags, "one-more": "v"}), str(MAX_TAGS))

    def test_tag_key_length(self) -> None:
        """A tag key of `MAX_TAG_KEY` characters passes; one more is refused; an empty key is refused."""
        self.assertEqual(
            self.from_json(obj(tags={"k" * MAX_TAG_KEY: "v"}), NOW).tags, {"k" * MAX_TAG_KEY: "v"}
        )
        self.assert_refused(obj(tags={"k" * (MAX_TAG_KEY + 1): "v"}), "keys")
        self.assert_refused(obj(tags={"": "v"}), "keys")

    def test_tag_value_length(self) -> None:
        """A tag value of `MAX_TAG_VALUE` characters passes; one more is refused."""
        self.assertEqual(
            self.from_json(obj(tags={"k": "v" * MAX_TAG_VALUE}), NOW).tags, {"k": "v" * MAX_TAG_VALUE}
        )
        self.assert_refused(obj(tags={"k": "v" * (MAX_TAG_VALUE + 1)}), "longer")

    def test_tag_control_characters(self) -> None:
        """Control characters and lone surrogates in tag keys or values are refused."""
        for char in ["\x00", "\n", "\x7f", "\x85", "\ud800"]:
            self.assert_refused(obj(tags={"k" + char: "v"}), "control")
            self.assert_refused(obj(tags={"k": "v" + char}), "control")


class FromJsonMsgspecTests(FromJsonTests):
    """`FromJsonTests` on the msgspec path of ``POST /metrics`` bodies, with the JSON text of each case."""

    from_json = staticmethod(from_json_by_msgspec)


class MakeTests(SynchronousTestCase):
    """`sample.make` applies the JSON sample's rules to parts, with the same messages."""

    def test_valid(self) -> None:
        """Valid parts make the sample, unchanged."""
        self.assertEqual(make("cpu", 0.5, 0, {"host": "a"}), Sample("cpu", 0.5, 0, {"host": "a"}))
        self.assertEqual(make("cpu", 2**64 - 1, MAX_NS, {}), Sample("cpu", 2**64 - 1, MAX_NS, {}))
        self.assertEqual(make("cpu", -1, MIN_NS, {}), Sample("cpu", -1, MIN_NS, {}))

    def test_refused(self) -> None:
        """Bad parts raise `IngestError` 400 ``invalid sample`` naming the part."""
        for parts, mentions in [
            (("", 1, 0, {}), "name"),
            (("n" * (MAX_NAME + 1), 1, 0, {}), "name: longer"),
            (("a\x00", 1, 0, {}), "name: control"),
            (("cpu", float("nan"), 0, {}), "value: must be a finite number"),
            (("cpu", 2**64, 0, {}), "value: integer out of 64-bit range"),
            (("cpu", True, 0, {}), "value: must be a number"),
            (("cpu", 1, MIN_NS - 1, {}), "timestamp: out of range (1677-09-21 to 2262-04-11)"),
            (("cpu", 1, MAX_NS + 1, {}), "timestamp: out of range (1677-09-21 to 2262-04-11)"),
            (("cpu", 1, 1.5, {}), "timestamp: must be integer nanoseconds"),
            (("cpu", 1, 0, {"": "v"}), "tags: keys"),
            (("cpu", 1, 0, {"k": "\n"}), "tags: control"),
        ]:
            error = self.assertRaises(IngestError, make, *parts)
            self.assertEqual((error.status, error.error), (400, "invalid sample"))
            self.assertIn(mentions, error.detail)

    def test_same_messages_as_from_json(self) -> None:
        """A bad name, value or tag set is refused by `make` with `from_json`'s very message."""
        for field, bad in [
            ("name", ""),
            ("name", "n" * (MAX_NAME + 1)),
            ("name", "a\x1b"),
            ("value", math.inf),
            ("value", -(2**63) - 1),
            ("value", "1"),
            ("tags", {"k": "v" * (MAX_TAG_VALUE + 1)}),
            ("tags", {f"k{index}": "v" for index in range(MAX_TAGS + 1)}),
        ]:
            parts: dict[str, Any] = {"name": "cpu", "value": 1, "timestamp": 0, "tags": {}}
            parts[field] = bad
            from_make = self.assertRaises(IngestError, make, *parts.values())
            from_object = self.assertRaises(IngestError, from_json, obj(**{field: bad}), NOW)
            self.assertEqual(from_make.detail, from_object.detail)


NAMES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=MAX_NAME
)  # fmt: skip
TAG_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)
VALUES = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
SAMPLES = st.builds(
    Sample,
    name=NAMES,
    value=VALUES,
    timestamp=st.integers(MIN_NS, MAX_NS),
    tags=st.dictionaries(TAG_TEXT.filter(bool), TAG_TEXT, max_size=5),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
SAMPLE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(NAMES, JSON_VALUES, st.text(max_size=5)),
        "value": st.one_of(VALUES, JSON_VALUES),
        "timestamp": st.one_of(st.integers(-10, 2**64), st.floats(), JSON_VALUES),
        "tags": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3), JSON_VALUES),
        "other": JSON_VALUES,
    },
)


class EncodeTests(SynchronousTestCase):
    """`encode` writes the storage form: one JSON object per line."""

    def decode(self, data: bytes) -> list[dict[str, Any]]:
        self.assertIsInstance(data, bytes)
        text = data.decode("utf-8")
        lines = text.split("\n")
        self.assertEqual(lines[-1], "", "the last line ends with a newline")
        return [json.loads(line) for line in lines[:-1]]

    def test_empty(self) -> None:
        """No samples encode to no bytes."""
        self.assertEqual(encode([]), b"")

    def test_lines(self) -> None:
        """Each sample is one line ending in a newline, with exactly name, value, timestamp and tags."""
        samples = [
            Sample("cpu.load", 0.42, 1_700_000_000_250_000_000, {"host": "a"}),
            Sample("requests", 7, 1_700_000_000_000_000_000, {}),
        ]
        data = encode(samples)
        self.assertEqual(data.count(b"\n"), 2)
        self.assertTrue(data.endswith(b"\n"))
        self.assertEqual(
            self.decode(data),
            [
                {
                    "name": "cpu.load",
                    "value": 0.42,
                    "timestamp": 1_700_000_000_250_000_000,
                    "tags": {"host": "a"},
                },
                {"name": "requests", "value": 7, "timestamp": 1_700_000_000_000_000_000, "tags": {}},
            ],
        )

    def test_slashes_and_unicode(self) -> None:
        """Slashes and non-ASCII text are stored JSON-escaped (ujson's defaults, the fast path) and
        read back as they were; the line stays ASCII."""
        sample = Sample("disk/sda1 température", 1, 0, {"path": "/var/log", "温度": "\U0001f600"})
        data = encode([sample])
        self.assertTrue(data.isascii())
        self.assertEqual(self.decode(data), [sample._asdict()])

    def test_integer_edges(self) -> None:
        """The extreme integer values and timestamps are stored exactly."""
        samples = [Sample("a", -(2**63), 0, {}), Sample("b", 2**64 - 1, MAX_NS, {})]
        self.assertEqual(self.decode(encode(samples)), [sample._asdict() for sample in samples])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(SAMPLES, max_size=5))
    def test_round_trip(self, samples: list[Sample]) -> None:
        """Every field of every sample reads back equal, with the value's type, through `json.loads`."""
        decoded = self.decode(encode(samples))
        self.assertEqual(len(decoded), len(samples))
        for sample, line in zip(samples, decoded, strict=True):
            self.assertEqual(set(line), {"name", "value", "timestamp", "tags"})
            self.assertEqual(line, sample._asdict())
            self.assertIs(type(line["value"]), type(sample.value))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(SAMPLES, max_size=5), st.data())
    def test_bytes_of_one_dumps_per_sample(self, samples: list[Sample], data: st.DataObject) -> None:
        """The lines are byte for byte one ``ujson.dumps`` of each sample, also when samples share
        a tags object or a name."""
        shared = [s._replace(tags=samples[0].tags) if data.draw(st.booleans()) else s for s in samples]
        expected = "".join(
            ujson.dumps({"name": s.name, "value": s.value, "timestamp": s.timestamp, "tags": s.tags}) + "\n"
            for s in shared
        )
        self.assertEqual(encode(shared), expected.encode("utf-8"))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(SAMPLE_LIKE, JSON_VALUES), max_size=6), st.data())
    def test_line_encoder_agrees_with_storage_line(self, objects: list[Any], data: st.DataObject) -> None:
        """`LineEncoder.line` gives what `storage_line` gives, the same JSON or the same error, whatever
        the body repeats (a repeated tags object may keep the key order it was first seen with)."""
        # Repeat some objects, and some names and tags with other values, to reach the caches.
        objects += [data.draw(st.sampled_from(objects)) for _ in range(3)] if objects else []
        objects += [
            {**obj, "value": data.draw(VALUES)}
            for obj in objects[:3]
            if isinstance(obj, dict) and "tags" in obj
        ]
        encoder = LineEncoder(NOW)
        for obj in objects:
            try:
                expected: object = storage_line(obj, NOW)
            except IngestError as error:
                expected = (error.status, error.error, error.detail)
            try:
                got: object = encoder.line(obj)
            except IngestError as error:
                got = (error.status, error.error, error.detail)
            if isinstance(got, str) and isinstance(expected, str):
                got, expected = ujson.loads(got), ujson.loads(expected)
                self.assertIs(type(got["value"]), type(expected["value"]))
            self.assertEqual(got, expected, obj)

    @settings(max_examples=200, deadline=None)
    @given(SAMPLE_LIKE)
    def test_from_json_any_object(self, value: dict[str, Any]) -> None:
        """Any JSON-like object is a valid sample that encodes to one line, or an `IngestError` 400."""
        try:
            sample = from_json(value, NOW)
        except IngestError as error:
            self.assertEqual((error.status, error.error), (400, "invalid sample"))
        else:
            self.assertEqual(self.decode(encode([sample])), [sample._asdict()])
