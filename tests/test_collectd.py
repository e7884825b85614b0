"""Tests for `ingest.collectd`: collectd's ``write_http`` JSON to samples.

The fixtures are POST bodies recorded from the real collectd 5.12 (Debian
bookworm's ``collectd-core``) by a capture server, with ``Interval 1``,
``Format "JSON"``, ``StoreRates false``, ``BufferSize 65536``: one interval of
the cpu, memory, load and interface plugins plus two value lists with NaN
gauges put through the unixsock plugin (``PUTVAL .../gauge-nan N:U`` and
``.../load N:1.5:U:0.25``), and, with ``Notifications true``, the body of one
``PUTNOTIF``.  The hand-made bodies hold each rule of the mapping and each
reason a value list is rejected; the property tests hold the contract (any
bytes give a `Converted` or an `IngestError`) and the mapping against a model
written the plain way, through `ingest.sample.make`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Any

import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.collectd import MAX_ERRORS, decode
from ingest.errors import IngestError
from ingest.sample import MAX_NAME, MAX_NS, MAX_TAG_VALUE, Converted, Sample, make, seconds_to_ns

NOW = 1_700_000_000_123_456_789
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ABSENT = object()


def fixture(name: str) -> bytes:
    with open(os.path.join(FIXTURES, name), "rb") as body:
        return body.read()


def value_list(**fields: Any) -> dict[str, Any]:
    """The brief's example value list (a cpu counter) with `fields` replaced; `ABSENT` leaves one out."""
    base: dict[str, Any] = {
        "values": [1901474177],
        "dstypes": ["counter"],
        "dsnames": ["value"],
        "time": 1280959128.123,
        "interval": 10.000,
        "host": "leeloo.octo.it",
        "plugin": "cpu",
        "plugin_instance": "0",
        "type": "cpu",
        "type_instance": "idle",
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ABSENT}


def body(*value_lists: Any) -> bytes:
    """A JSON array as collectd writes it: no spaces; NaN and infinities as the literals ujson reads."""
    return json.dumps(list(value_lists), separators=(",", ":")).encode("utf-8")


def samples(converted: Converted) -> list[Sample]:
    return [Sample(**ujson.loads(line)) for line in converted.lines]


def storage_form(sample: Sample) -> str:
    """A stored line as PRODUCT.md defines it: what ujson writes for the four keys, defaults on."""
    return ujson.dumps(sample._asdict())


class FixtureTests(SynchronousTestCase):
    """Bodies that the real collectd posted decode to the samples PRODUCT.md names."""

    def test_recorded_body(self) -> None:
        """Every value of the recorded POST is a sample, but the two nulls, which are counted as NaN."""
        recorded = fixture("collectd.json")
        document = json.loads(recorded)
        converted = decode(recorded, NOW)
        self.assertEqual((converted.rejected, converted.errors), (0, []))
        self.assertEqual(converted.skipped, {"nan": 2})
        values = sum(len(entry["values"]) for entry in document)
        self.assertEqual(len(converted.lines), values - 2)
        got = samples(converted)
        for sample, line in zip(got, converted.lines, strict=True):
            self.assertEqual(line, storage_form(sample))
            self.assertEqual(make(*sample), sample)
        by_name = Counter(sample.name for sample in got)
        self.assertEqual(by_name["cpu.cpu"], 16)
        self.assertEqual(by_name["memory.memory"], 6)
        for name in ("load.load.shortterm", "load.load.midterm", "load.load.longterm"):
            self.assertEqual(by_name[name], 1, name)
        for name in ("if_octets", "if_packets", "if_errors", "if_dropped"):
            self.assertEqual(by_name[f"interface.{name}.rx"], 4, name)
            self.assertEqual(by_name[f"interface.{name}.tx"], 4, name)
        self.assertEqual(by_name["test.load.shortterm"] + by_name["test.load.longterm"], 2)
        self.assertNotIn("test.load.midterm", by_name)
        self.assertNotIn("test.gauge", by_name)
        self.assertIn(
            Sample(
                "cpu.cpu",
                249247,
                1796199707414000000,
                {"host": "capture-host", "plugin_instance": "0", "type_instance": "user"},
            ),
            got,
        )
        self.assertIn(
            Sample("load.load.shortterm", 1.765625, 1796199707414000000, {"host": "capture-host"}), got
        )
        self.assertIn(
            Sample(
                "memory.memory",
                231112704,
                1796199707414000000,
                {"host": "capture-host", "type_instance": "used"},
            ),
            got,
        )
        self.assertIn(
            Sample(
                "interface.if_octets.rx",
                14292348742,
                1796199707415000000,
                {"host": "capture-host", "plugin_instance": "lo"},
            ),
            got,
        )

    def test_recorded_notification(self) -> None:
        """A notification posted with ``Notifications true`` stores nothing and is counted."""
        converted = decode(fixture("collectd_notification.json"), NOW)
        self.assertEqual(converted, Converted([], 0, [], {"notification": 1}))


class MappingTests(SynchronousTestCase):
    """Each rule of PRODUCT.md's mapping, on hand-made bodies."""

    def decode_one(self, **fields: Any) -> list[Sample]:
        converted = decode(body(value_list(**fields)), NOW)
        self.assertEqual((converted.rejected, converted.errors), (0, []))
        return samples(converted)

    def test_example(self) -> None:
        """collectd's documented example: a counter called ``value`` gives ``<plugin>.<type>``."""
        self.assertEqual(
            self.decode_one(),
            [
                Sample(
                    "cpu.cpu",
                    1901474177,
                    1280959128123000000,
                    {"host": "leeloo.octo.it", "plugin_instance": "0", "type_instance": "idle"},
                )
            ],
        )

    def test_data_source_names(self) -> None:
        """Each data source is one sample, in order; its name follows the type's but for ``value``."""
        got = self.decode_one(
            values=[1.5, 2, 3.25, 4], dsnames=["shortterm", "value", "midterm", "Value"], plugin="load"
        )
        self.assertEqual(
            [(sample.name, sample.value) for sample in got],
            [("load.cpu.shortterm", 1.5), ("load.cpu", 2), ("load.cpu.midterm", 3.25), ("load.cpu.Value", 4)],
        )

    def test_same_name_twice(self) -> None:
        """Two data sources of one name are two samples, as collectd sent them."""
        got = self.decode_one(values=[1, 2], dsnames=["rx", "rx"])
        self.assertEqual(
            [(sample.name, sample.value) for sample in got], [("cpu.cpu.rx", 1), ("cpu.cpu.rx", 2)]
        )

    def test_tags_where_not_empty(self) -> None:
        """``host``, ``plugin_instance`` and ``type_instance`` are tags where not empty; absent is empty."""
        cases = [
            ({}, {"host": "leeloo.octo.it", "plugin_instance": "0", "type_instance": "idle"}),
            ({"plugin_instance": ""}, {"host": "leeloo.octo.it", "type_instance": "idle"}),
            ({"type_instance": ""}, {"host": "leeloo.octo.it", "plugin_instance": "0"}),
            ({"plugin_instance": ABSENT, "type_instance": ABSENT}, {"host": "leeloo.octo.it"}),
            ({"host": "", "plugin_instance": "", "type_instance": ""}, {}),
        ]
        for fields, tags in cases:
            (sample,) = self.decode_one(**fields)
            self.assertEqual(sample.tags, tags, fields)
            self.assertEqual(list(sample.tags), list(tags), "tags keep the order host, plugin, type")

    def test_time(self) -> None:
        """``time`` in seconds becomes nanoseconds, digits kept; 0, null or absent is the time of receipt."""
        cases = [
            (1280959128.123, 1280959128123000000),
            (1796199707.415, 1796199707415000000),
            (0.1, 100000000),
            (1280959128, 1280959128000000000),
            (-1.5, -1500000000),
            (0, NOW),
            (0.0, NOW),
            (-0.0, NOW),
            (None, NOW),
            (ABSENT, NOW),
        ]
        for seconds, ns in cases:
            (sample,) = self.decode_one(time=seconds)
            self.assertEqual(sample.timestamp, ns, seconds)

    def test_times_of_a_body(self) -> None:
        """Value lists of one body keep their own times, repeated or interleaved."""
        times = [1796199694.003, 1796199694.004, 1796199694.003, 0.0, 1796199694.004]
        converted = decode(body(*(value_list(time=seconds) for seconds in times)), NOW)
        self.assertEqual(
            [sample.timestamp for sample in samples(converted)],
            [1796199694003000000, 1796199694004000000, 1796199694003000000, NOW, 1796199694004000000],
        )

    def test_values(self) -> None:
        """Integers (counter, derive, absolute) at the 64-bit limits and floats are stored as written."""
        values = [2**64 - 1, -(2**63), 0, -0.0, 1.5e-7, 1e300, 231112704]
        got = self.decode_one(values=values, dsnames=[f"d{i}" for i in range(len(values))])
        self.assertEqual([sample.value for sample in got], values)
        self.assertEqual([type(sample.value) for sample in got], [type(value) for value in values])

    def test_nan_skipped(self) -> None:
        """``null`` (collectd's NaN), and NaN and infinities that ujson reads, are skipped and counted."""
        converted = decode(
            b'[{"values":[null,1,NaN,Infinity,-Infinity,1e999],"dsnames":["a","b","c","d","e","f"],'
            b'"time":1.5,"host":"h","plugin":"p","type":"t"}]',
            NOW,
        )
        self.assertEqual((converted.rejected, converted.skipped), (0, {"nan": 2, "infinity": 3}))
        self.assertEqual(samples(converted), [Sample("p.t.b", 1, 1500000000, {"host": "h"})])

    def test_only_nulls(self) -> None:
        """A value list of nulls stores nothing and is not an error."""
        converted = decode(body(value_list(values=[None, None], dsnames=["rx", "tx"])), NOW)
        self.assertEqual(converted, Converted([], 0, [], {"nan": 2}))

    def test_other_keys_ignored(self) -> None:
        """``dstypes``, ``interval``, ``meta`` and keys collectd may add are not stored and not checked."""
        plain = self.decode_one()
        for fields in (
            {"meta": {"network:received": True, "k": "v"}},
            {"dstypes": ABSENT, "interval": ABSENT},
            {"dstypes": "nonsense", "interval": "x"},
            {"future_key": [1, {"a": None}]},
        ):
            self.assertEqual(self.decode_one(**fields), plain, fields)

    def test_empty_array(self) -> None:
        """An empty array is a body of no value lists."""
        self.assertEqual(decode(b"[]", NOW), Converted([], 0, [], {}))
        self.assertEqual(decode(b" [ ] \n", NOW), Converted([], 0, [], {}))

    def test_storage_form(self) -> None:
        """Each line is what ujson writes for the sample, slashes and non-ASCII text included."""
        converted = decode(
            body(
                value_list(host="a/b", type_instance="é\u2603", plugin="p/q", values=[0.1], dsnames=["x/y"]),
                value_list(host="a/b", type_instance="é\u2603", plugin="p/q", values=[7], dsnames=["x/y"]),
            ),
            NOW,
        )
        got = samples(converted)
        self.assertEqual(got[0].name, "p/q.cpu.x/y")
        self.assertEqual(got[0].tags, {"host": "a/b", "plugin_instance": "0", "type_instance": "é\u2603"})
        self.assertEqual(converted.lines, [storage_form(sample) for sample in got])

    def test_notification(self) -> None:
        """An object with ``labels`` and no ``values`` is a notification: skipped, counted, no error."""
        notification = {"labels": {"alertname": "collectd_cpu"}, "annotations": {}, "startsAt": "x"}
        converted = decode(body(value_list(), notification, value_list()), NOW)
        self.assertEqual((len(converted.lines), converted.rejected), (2, 0))
        self.assertEqual(converted.skipped, {"notification": 1})


# (fields replaced in the example value list, the reason it is rejected for)
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"values": ABSENT}, "values: must be an array"),
    ({"values": None}, "values: must be an array"),
    ({"values": 1}, "values: must be an array"),
    ({"values": {"value": 1}}, "values: must be an array"),
    ({"values": []}, "dsnames: 1 names for 0 values"),
    ({"values": [], "dsnames": []}, "values: empty"),
    ({"dsnames": ABSENT}, "dsnames: must be an array"),
    ({"dsnames": "value"}, "dsnames: must be an array"),
    ({"values": [1, 2]}, "dsnames: 1 names for 2 values"),
    ({"dsnames": ["value", "rx"]}, "dsnames: 2 names for 1 values"),
    ({"dsnames": [""]}, "dsnames: must be non-empty strings"),
    ({"dsnames": [1]}, "dsnames: must be non-empty strings"),
    ({"dsnames": [None]}, "dsnames: must be non-empty strings"),
    ({"values": [True]}, "values: must be numbers or null"),
    ({"values": ["1"]}, "values: must be numbers or null"),
    ({"values": [[1]]}, "values: must be numbers or null"),
    ({"values": [{}]}, "values: must be numbers or null"),
    ({"values": [2**64]}, "value: integer out of 64-bit range"),
    ({"values": [-(2**63) - 1]}, "value: integer out of 64-bit range"),
    ({"host": ABSENT}, "host: must be a string"),
    ({"host": None}, "host: must be a string"),
    ({"host": 1}, "host: must be a string"),
    ({"plugin": ABSENT}, "plugin: must be a non-empty string"),
    ({"plugin": ""}, "plugin: must be a non-empty string"),
    ({"plugin": ["cpu"]}, "plugin: must be a non-empty string"),
    ({"type": ABSENT}, "type: must be a non-empty string"),
    ({"type": ""}, "type: must be a non-empty string"),
    ({"type": 0}, "type: must be a non-empty string"),
    ({"plugin_instance": None}, "plugin_instance: must be a string"),
    ({"plugin_instance": 0}, "plugin_instance: must be a string"),
    ({"type_instance": None}, "type_instance: must be a string"),
    ({"type_instance": {"a": "b"}}, "type_instance: must be a string"),
    ({"time": "1280959128.123"}, "time: must be a number of seconds"),
    ({"time": True}, "time: must be a number of seconds"),
    ({"time": False}, "time: must be a number of seconds"),
    ({"time": [1]}, "time: must be a number of seconds"),
    ({"time": MAX_NS // 10**9 + 1}, "time: out of range"),
    ({"time": -1e300}, "time: out of range"),
    ({"time": float("nan")}, "time: out of range"),
    ({"time": float("inf")}, "time: out of range"),
    ({"plugin": "p" * (MAX_NAME - 3)}, "name: longer than 256 characters"),
    ({"dsnames": ["d" * (MAX_NAME - 7)]}, "name: longer than 256 characters"),
    ({"plugin": "cp\x01u"}, "name: control characters are not allowed"),
    ({"dsnames": ["\x7f"]}, "name: control characters are not allowed"),
    ({"host": "h" * (MAX_TAG_VALUE + 1)}, "tags: value of 'host' longer than 1024 characters"),
    ({"plugin_instance": "i" * (MAX_TAG_VALUE + 1)}, "longer than 1024 characters"),
    ({"type_instance": "t\ud800"}, "tags: control characters are not allowed"),
    ({"host": "a\nb"}, "tags: control characters are not allowed"),
    ({"values": None, "labels": {}}, "values: must be an array"),  # a notification has no "values"
]


class RejectionTests(SynchronousTestCase):
    """A value list that breaks a rule is rejected whole, by its index, and the others are kept."""

    def test_each_rule(self) -> None:
        """Each broken rule rejects its value list with its reason; the value lists around it are stored."""
        good = samples(decode(body(value_list()), NOW))
        for fields, reason in REJECTED:
            converted = decode(body(value_list(), value_list(**fields), value_list()), NOW)
            self.assertEqual(converted.rejected, 1, fields)
            self.assertEqual(len(converted.errors), 1, fields)
            index, detail = converted.errors[0]
            self.assertEqual(index, 1, fields)
            self.assertIn(reason, detail, fields)
            self.assertEqual(samples(converted), good * 2, fields)

    def test_limits_accepted(self) -> None:
        """A name of exactly `MAX_NAME` characters and a tag of `MAX_TAG_VALUE` are stored (N; N+1 above)."""
        for fields in (
            {"plugin": "p" * (MAX_NAME - 4)},
            {"dsnames": ["d" * (MAX_NAME - 8)]},
            {"host": "h" * MAX_TAG_VALUE, "type_instance": "t" * MAX_TAG_VALUE},
        ):
            converted = decode(body(value_list(**fields)), NOW)
            self.assertEqual((converted.rejected, len(converted.lines)), (0, 1), fields)
        (sample,) = samples(decode(body(value_list(plugin="p" * (MAX_NAME - 4))), NOW))
        self.assertEqual(len(sample.name), MAX_NAME)

    def test_whole_value_list(self) -> None:
        """A fault in a later data source drops the earlier ones too, and its nulls are not counted."""
        converted = decode(
            body(value_list(values=[None, 1, 2, "x"], dsnames=["a", "b", "c", "d"]), value_list()), NOW
        )
        self.assertEqual(converted.rejected, 1)
        self.assertEqual(converted.errors, [(0, "values: must be numbers or null")])
        self.assertEqual(converted.skipped, {})
        self.assertEqual([sample.name for sample in samples(converted)], ["cpu.cpu"])

    def test_errors_listed_up_to_the_limit(self) -> None:
        """Every rejected value list is counted; the first `MAX_ERRORS` are listed with their index."""
        bad = value_list(values="x")
        converted = decode(body(*([bad] * (MAX_ERRORS + 1)), value_list()), NOW)
        self.assertEqual(converted.rejected, MAX_ERRORS + 1)
        self.assertEqual([index for index, _ in converted.errors], list(range(MAX_ERRORS)))
        self.assertEqual(len(converted.lines), 1)


class BodyTests(SynchronousTestCase):
    """A body that is not an array of objects is refused whole: 400."""

    def assert_refused(self, data: bytes, error: str) -> None:
        refusal = self.assertRaises(IngestError, decode, data, NOW)
        self.assertEqual((refusal.status, refusal.error), (400, error), data)
        self.assertTrue(refusal.detail, data)

    def test_not_json(self) -> None:
        """Bytes that are not JSON: ``malformed JSON``."""
        for data in (
            b"",
            b" ",
            b"[",
            b"[{}",
            b"[1,]",
            b"\xff",
            b'["\xff"]',
            b"PUTVAL leeloo/cpu-0/cpu-idle interval=10 N:1\r\n",
            b"[" * 100_000,
        ):
            self.assert_refused(data, "malformed JSON")

    def test_not_an_array_of_objects(self) -> None:
        """JSON that is not an array of objects (one stray element is enough): ``invalid body``."""
        for data in (b"{}", b'{"values":[1]}', b"1", b"null", b'"x"', b"[1]", b"[[]]", b"[null]"):
            self.assert_refused(data, "invalid body")
        self.assert_refused(body(value_list(), 1), "invalid body")
        self.assert_refused(body(value_list(), [value_list()]), "invalid body")


def model(document: list[Any], now_ns: int) -> tuple[list[Sample], list[int], Counter[str]]:
    """PRODUCT.md's mapping written plainly: samples, the indexes of rejected value lists, skipped counts."""
    stored: list[Sample] = []
    rejected: list[int] = []
    skipped: Counter[str] = Counter()
    for index, entry in enumerate(document):
        if "values" not in entry and "labels" in entry:
            skipped["notification"] += 1
            continue
        try:
            found, nan, infinity = model_value_list(entry, now_ns)
        except (IngestError, AssertionError):
            rejected.append(index)
            continue
        stored += found
        skipped["nan"] += nan
        skipped["infinity"] += infinity
    return stored, rejected, +skipped


def model_value_list(entry: dict[str, Any], now_ns: int) -> tuple[list[Sample], int, int]:
    values, dsnames = entry.get("values"), entry.get("dsnames")
    assert isinstance(values, list) and isinstance(dsnames, list)
    assert len(values) == len(dsnames) > 0
    identity = [entry.get(key) for key in ("host", "plugin", "type")]
    identity += [entry.get(key, "") for key in ("plugin_instance", "type_instance")]
    assert all(isinstance(part, str) for part in identity)
    host, plugin, type_, plugin_instance, type_instance = identity
    assert plugin and type_
    tags = {
        key: text
        for key, text in (
            ("host", host),
            ("plugin_instance", plugin_instance),
            ("type_instance", type_instance),
        )
        if text
    }
    seconds = entry.get("time")
    if seconds is None or (not isinstance(seconds, bool) and seconds == 0):
        timestamp = now_ns
    else:
        timestamp = seconds_to_ns(seconds)
    found = []
    nan = infinity = 0
    for dsname, value in zip(dsnames, values, strict=True):
        assert isinstance(dsname, str) and dsname
        name = f"{plugin}.{type_}" if dsname == "value" else f"{plugin}.{type_}.{dsname}"
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            make(name, 0, timestamp, tags)  # a skipped value's name and tags must pass all the same
            if value is None or value != value:
                nan += 1
            else:
                infinity += 1
        else:
            found.append(make(name, value, timestamp, tags))
    return found, nan, infinity


NAME_TEXT = st.one_of(
    st.sampled_from(["value", "rx", "cpu", "a/b", "é", "if_octets"]),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=4),
)
TAG_TEXT = st.one_of(st.just(""), NAME_TEXT)
NUMBER = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)
ANY_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=3),
        st.sampled_from(["", "x\x01", "\ud800", "v" * (MAX_TAG_VALUE + 1)]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def value_lists(draw: st.DrawFn) -> dict[str, Any]:
    """A value list, valid but for an empty data source name, with up to two of its fields (or
    ``labels``) left out, empty, or replaced by any JSON."""
    size = draw(st.integers(1, 3))
    entry = {
        "values": draw(st.lists(NUMBER, min_size=size, max_size=size)),
        "dsnames": draw(st.lists(NAME_TEXT | st.just(""), min_size=size, max_size=size)),
        "time": draw(st.one_of(st.floats(-1e10, 1e10), st.integers(-(10**10), 10**10), st.just(0))),
        "host": draw(TAG_TEXT),
        "plugin": draw(NAME_TEXT),
        "type": draw(NAME_TEXT),
        "plugin_instance": draw(TAG_TEXT),
        "type_instance": draw(TAG_TEXT),
    }
    for key in draw(st.lists(st.sampled_from([*sorted(entry), "labels"]), max_size=2)):
        entry[key] = draw(st.sampled_from([ABSENT, ""]) | ANY_JSON)
    return {key: value for key, value in entry.items() if value is not ABSENT}


NOTIFICATIONS = st.fixed_dictionaries({"labels": ANY_JSON, "startsAt": st.text(max_size=3)})


class PropertyTests(SynchronousTestCase):
    """The module's contract on generated input."""

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200))
    def test_any_bytes(self, data: bytes) -> None:
        """Any bytes give a `Converted` or raise `IngestError` (400); nothing else escapes."""
        try:
            converted = decode(data, NOW)
        except IngestError as error:
            self.assertEqual(error.status, 400)
            return
        self.assertIsInstance(converted, Converted)

    @settings(max_examples=500, deadline=None)
    @given(ANY_JSON)
    def test_any_json(self, document: Any) -> None:
        """Any JSON document gives a `Converted` or raises `IngestError` (400)."""
        try:
            converted = decode(json.dumps(document).encode("utf-8"), NOW)
        except IngestError as error:
            self.assertEqual(error.status, 400)
            return
        self.assertIsInstance(converted, Converted)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(value_lists() | NOTIFICATIONS, max_size=4))
    def test_against_the_model(self, document: list[dict[str, Any]]) -> None:
        """Value lists right and wrong decode as the plain model does, line by line in storage form."""
        data = json.dumps(document).encode("utf-8")
        converted = decode(data, NOW)
        # The model reads what ujson read: the mapping is under test here, not ujson's floats.
        stored, rejected, skipped = model(ujson.loads(data), NOW)
        self.assertEqual(samples(converted), stored)
        self.assertEqual(converted.lines, [storage_form(sample) for sample in stored])
        self.assertEqual([index for index, _ in converted.errors], rejected)
        self.assertEqual(converted.rejected, len(rejected))
        self.assertTrue(all(reason for _, reason in converted.errors))
        self.assertEqual(converted.skipped, dict(skipped))
