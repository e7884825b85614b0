"""Tests for `ingest.lineproto`: InfluxDB line protocol to samples.

The grammar table takes its corner cases from the InfluxDB v2 line protocol
reference (syntax, data types, quotes, special characters, the backslash
table, comments, timestamps); the malformed table holds one broken rule per
row with the reason a client is told.  Each row runs alone, inside a batch
(line numbers), and in a body that has a backslash and a quote elsewhere,
which turns off the body-wide fast path.  The property tests hold the
module's contract: any bytes give a `Parsed`, never an exception, and points
encoded with the reference's escaping parse back to the expected samples.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import ujson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.errors import IngestError
from ingest.lineproto import (
    MAX_ERRORS,
    PRECISIONS,
    Parsed,
    _fields,
    _line_end,
    _logical_lines,
    _quoted_fields,
    _quoted_line_end,
    parse,
)
from ingest.sample import MAX_NAME, MAX_NS, MAX_TAG_KEY, MAX_TAG_VALUE, MAX_TAGS, MIN_NS, Sample, make

NOW = 1_700_000_000_123_456_789
# A comment with a backslash and a double quote: in a body, it sends every line down the general path.
NOT_PLAIN = b'# \\ "'


def s(name: str, value: int | float, timestamp: int = NOW, **tags: str) -> Sample:
    return Sample(name, value, timestamp, tags)


# (body, precision, samples, skipped string fields)
GRAMMAR: list[tuple[bytes, str, list[Sample], int]] = [
    # Elements and the VictoriaMetrics naming.
    (b"cpu value=1", "ns", [s("cpu", 1.0)], 0),
    (b"cpu usage=0.5", "ns", [s("cpu_usage", 0.5)], 0),
    (b"cpu Value=0.5", "ns", [s("cpu_Value", 0.5)], 0),
    (b"cpu,host=a,region=eu usage=0.5", "ns", [s("cpu_usage", 0.5, host="a", region="eu")], 0),
    (b"cpu value=1,idle=2,user=3", "ns", [s("cpu", 1.0), s("cpu_idle", 2.0), s("cpu_user", 3.0)], 0),
    (b"cpu a=1,a=2", "ns", [s("cpu_a", 1.0), s("cpu_a", 2.0)], 0),
    (b"a=b value=1", "ns", [s("a=b", 1.0)], 0),
    (b"m" * (MAX_NAME - 2) + b" f=1", "ns", [s("m" * (MAX_NAME - 2) + "_f", 1.0)], 0),
    # Floats.
    (b"m f=1.0", "ns", [s("m_f", 1.0)], 0),
    (b"m f=-1.234456e+78", "ns", [s("m_f", -1.234456e78)], 0),
    (
        b"m a=-1.5e10,b=1e-3,c=1E5,d=2.5E-2",
        "ns",
        [s("m_a", -1.5e10), s("m_b", 1e-3), s("m_c", 1e5), s("m_d", 0.025)],
        0,
    ),
    (
        b"m a=.5,b=5.,c=-.5,d=-0,e=007.5",
        "ns",
        [s("m_a", 0.5), s("m_b", 5.0), s("m_c", -0.5), s("m_d", -0.0), s("m_e", 7.5)],
        0,
    ),
    (b"m f=1.7976931348623157e308", "ns", [s("m_f", 1.7976931348623157e308)], 0),
    # Integers and unsigned integers, at their limits.
    (
        b"m a=1i,b=12485903i,c=-12485903i,d=007i,e=-0i",
        "ns",
        [s("m_a", 1), s("m_b", 12485903), s("m_c", -12485903), s("m_d", 7), s("m_e", 0)],
        0,
    ),
    (b"m a=9223372036854775807i,b=-9223372036854775808i", "ns", [s("m_a", 2**63 - 1), s("m_b", -(2**63))], 0),
    (
        b"m a=0u,b=12485903u,c=18446744073709551615u",
        "ns",
        [s("m_a", 0), s("m_b", 12485903), s("m_c", 2**64 - 1)],
        0,
    ),
    # Every boolean spelling.
    (b"m a=t,b=T,c=true,d=True,e=TRUE", "ns", [s(f"m_{k}", 1) for k in "abcde"], 0),
    (b"m a=f,b=F,c=false,d=False,e=FALSE", "ns", [s(f"m_{k}", 0) for k in "abcde"], 0),
    # Strings: not samples, counted; commas, spaces and equals signs inside need no escape.
    (b'm s="this is a string"', "ns", [], 1),
    (b'm s="a",t="b"', "ns", [], 2),
    (b'm s="",v=1', "ns", [s("m_v", 1.0)], 1),
    (b'm s="a, b=c d",v=1 5', "ns", [s("m_v", 1.0, 5)], 1),
    (b'm s="\\"string\\" within a string",v=1', "ns", [s("m_v", 1.0)], 1),
    (b'm s="ends in a backslash\\\\",v=1', "ns", [s("m_v", 1.0)], 1),
    (b'm s="\\\\\\"",v=1', "ns", [s("m_v", 1.0)], 1),
    (b'm s="other \\escapes\\n stay",v=1', "ns", [s("m_v", 1.0)], 1),
    (b'm value="1"', "ns", [], 1),
    (
        'myMeasurement,tagKey=🍭 fieldKey="Launch 🚀",n=1i 1556813561098000000'.encode(),
        "ns",
        [s("myMeasurement_n", 1, 1556813561098000000, tagKey="🍭")],
        1,
    ),
    # Escapes in measurements.
    (b"my\\ Measurement value=1", "ns", [s("my Measurement", 1.0)], 0),
    (b"cpu\\,01,host=serverA value=1", "ns", [s("cpu,01", 1.0, host="serverA")], 0),
    (b"a\\=b value=1", "ns", [s("a\\=b", 1.0)], 0),
    (b"\\ cpu value=1", "ns", [s(" cpu", 1.0)], 0),
    # Escapes in tag keys and values, and in field keys.
    (
        b"myMeasurement,tag\\ Key1=tag\\ Value1,tag\\ Key2=tag\\ Value2 fieldKey=100",
        "ns",
        [s("myMeasurement_fieldKey", 100.0, **{"tag Key1": "tag Value1", "tag Key2": "tag Value2"})],
        0,
    ),
    (b"m,k\\,1\\=x=v\\,2\\=y value=1", "ns", [s("m", 1.0, **{"k,1=x": "v,2=y"})], 0),
    (b"m f\\ 1\\,2\\=3=1", "ns", [s("m_f 1,2=3", 1.0)], 0),
    (b"m,path=C:\\temp value=1", "ns", [s("m", 1.0, path="C:\\temp")], 0),
    (b"m,k=a\\nb value=1", "ns", [s("m", 1.0, k="a\\nb")], 0),
    # InfluxDB's backslashes: a comma, equals sign or space right after a backslash is escaped,
    # whatever is before that backslash; every other backslash is kept.
    (b"m,k=a\\\\\\ b value=1", "ns", [s("m", 1.0, k="a\\\\ b")], 0),
    (b"m,k=two\\\\ words value=42", "ns", [s("m", 42.0, k="two\\ words")], 0),
    (b"m,k=\\\\,\\,\\=east value=1", "ns", [s("m", 1.0, k="\\,,=east")], 0),
    (b"m,reg\\\\=ion=east value=1", "ns", [s("m", 1.0, **{"reg\\=ion": "east"})], 0),
    (b"m,\\\\n=t value=1", "ns", [s("m", 1.0, **{"\\\\n": "t"})], 0),
    (b"m\\\\\\ x value=1", "ns", [s("m\\\\ x", 1.0)], 0),
    (b"m \\e\\\\\\ =4", "ns", [s("m_\\e\\\\ ", 4.0)], 0),
    (b'm \\"k=4', "ns", [s('m_"k', 4.0)], 0),
    *[
        (b"m,k=a" + b"\\" * count + b"x value=1", "ns", [s("m", 1.0, k="a" + "\\" * count + "x")], 0)
        for count in range(1, 7)
    ],
    # Quotes in names are plain characters.
    (b'"m",\'k\'="v" "f"=1', "ns", [s('"m"_"f"', 1.0, **{"'k'": '"v"'})], 0),
    # Unicode.
    ("温度,城市=東京 value=21.5".encode(), "ns", [s("温度", 21.5, 城市="東京")], 0),
    (
        "température,pièce=salle\\ à\\ manger valeur=19".encode(),
        "ns",
        [s("température_valeur", 19.0, pièce="salle à manger")],
        0,
    ),
    # Timestamps, at every precision.
    (b"cpu value=1 1556813561098000000", "ns", [s("cpu", 1.0, 1556813561098000000)], 0),
    (b"cpu value=1 1556813561098000000", "n", [s("cpu", 1.0, 1556813561098000000)], 0),
    (b"cpu value=1 1556813561098000", "us", [s("cpu", 1.0, 1556813561098000000)], 0),
    (b"cpu value=1 1556813561098000", "u", [s("cpu", 1.0, 1556813561098000000)], 0),
    (b"cpu value=1 1556813561098", "ms", [s("cpu", 1.0, 1556813561098000000)], 0),
    (b"cpu value=1 1556813561", "s", [s("cpu", 1.0, 1556813561000000000)], 0),
    (b"cpu value=1 25946892", "m", [s("cpu", 1.0, 25946892 * 60_000_000_000)], 0),
    (b"cpu value=1 432448", "h", [s("cpu", 1.0, 432448 * 3_600_000_000_000)], 0),
    (b"cpu value=1 0", "ns", [s("cpu", 1.0, 0)], 0),
    (b"cpu value=1 -0", "ns", [s("cpu", 1.0, 0)], 0),
    (b"cpu value=1 0001", "s", [s("cpu", 1.0, 1_000_000_000)], 0),
    (b"cpu value=1 9223372036854775806", "ns", [s("cpu", 1.0, MAX_NS)], 0),
    (b"cpu value=1 -9223372036854775806", "ns", [s("cpu", 1.0, MIN_NS)], 0),
    (b"cpu value=1 -1", "ns", [s("cpu", 1.0, -1)], 0),
    (b"cpu value=1 -1556813561", "s", [s("cpu", 1.0, -1556813561000000000)], 0),
    (b"cpu value=1 -9223372036", "s", [s("cpu", 1.0, -9223372036000000000)], 0),
    (b"cpu value=1 9223372036", "s", [s("cpu", 1.0, 9223372036 * 1_000_000_000)], 0),
    # Comments, empty and white lines, CRLF, white space around sections.
    (b"# This is a comment\ncpu value=1", "ns", [s("cpu", 1.0)], 0),
    (b"  \t# indented comment, value=2\ncpu value=1", "ns", [s("cpu", 1.0)], 0),
    (b"#cpu value=2", "ns", [], 0),
    (b"\n\n  \t \n\ncpu value=1\n\n", "ns", [s("cpu", 1.0)], 0),
    (b"cpu value=1\r\nmem value=2 5\r\n", "ns", [s("cpu", 1.0), s("mem", 2.0, 5)], 0),
    (b"  \tcpu value=1", "ns", [s("cpu", 1.0)], 0),
    (b"cpu,host=a   value=1    5   \t", "ns", [s("cpu", 1.0, 5, host="a")], 0),
    (b"cpu value=1 \r", "ns", [s("cpu", 1.0)], 0),
    (b"", "ns", [], 0),
]

# (line, reason substring)
MALFORMED: list[tuple[bytes, str]] = [
    # Structure.
    (b"cpu", "missing fields"),
    (b"cpu,host=a", "missing fields"),
    (b"cpu\tvalue=1", "missing fields"),
    (b",host=a value=1", "missing measurement"),
    (b"cpu,host value=1", "tag 'host': missing '='"),
    (b"cpu,a=b,c value=1", "tag 'c': missing '='"),
    (b"cpu,=a value=1", "empty tag key"),
    (b"cpu, value=1", "empty tag key"),
    (b"cpu,host= value=1", "tag 'host': empty value"),
    (b"cpu,a=b=c value=1", "tag 'a': unescaped '=' in value"),
    (b"cpu,a==b value=1", "tag 'a': unescaped '=' in value"),
    (b"cpu,a=1,a=2 value=1", "duplicate tag 'a'"),
    (b"cpu,a\\ b=1,a\\ b=2 value=1", "duplicate tag 'a b'"),
    (b"cpu value", "field 'value': missing '='"),
    (b"cpu a=1,b", "field 'b': missing '='"),
    (b"cpu =1", "empty field key"),
    (b"cpu value=", "field 'value': missing value"),
    (b"cpu a=,b=1", "field 'a': missing value"),
    (b"cpu value=1,", "empty field key"),
    (b"cpu a=1,,b=2", "empty field key"),
    # Field values.
    (b"cpu value=abc", "field 'value': bad value 'abc'"),
    (b"cpu value=1.2.3", "bad value '1.2.3'"),
    (b"cpu value=+1", "bad value '+1'"),
    (b"cpu value=1_000", "bad value '1_000'"),
    (b"cpu value=nan", "bad value 'nan'"),
    (b"cpu value=-inf", "bad value '-inf'"),
    (b"cpu value=Infinity", "bad value 'Infinity'"),
    (b"cpu value=1e", "bad value '1e'"),
    (b"cpu value=.", "bad value '.'"),
    (b"cpu value=-", "bad value '-'"),
    (b"cpu value=0x10", "bad value '0x10'"),
    ("cpu value=\u0661".encode(), "bad value"),  # ARABIC-INDIC DIGIT ONE, which float() reads
    ("cpu value=1\u0661".encode(), "bad value"),
    (b"cpu value=tRue", "bad value 'tRue'"),
    (b"cpu value=1=2", "bad value '1=2'"),
    (b'cpu value=1"x"', "bad value '1\"x\"'"),
    (b"cpu value=1\\ 2", "bad value '1\\\\ 2'"),
    (b"cpu value=1e999", "field 'value': value: must be a finite number"),
    (b"cpu value=1.5i", "bad integer '1.5i'"),
    (b"cpu value=i", "bad integer 'i'"),
    (b"cpu value=+1i", "bad integer"),
    (b"cpu value=9223372036854775808i", "integer out of int64 range"),
    (b"cpu value=-9223372036854775809i", "integer out of int64 range"),
    (b"cpu value=" + b"1" * 5000 + b"i", "integer out of range"),
    (b"cpu value=-1u", "bad unsigned integer '-1u'"),
    (b"cpu value=18446744073709551616u", "unsigned integer out of uint64 range"),
    # Strings.
    (b'cpu s="a"b', "field 's': unexpected 'b' after the string"),
    (b'cpu s="a"5 5', "unexpected '5' after the string"),
    (b'cpu s="a" b=1', "bad timestamp 'b=1'"),
    # Timestamps.
    (b"cpu value=1 abc", "bad timestamp 'abc'"),
    (b"cpu value=1 1.5", "bad timestamp '1.5'"),
    (b"cpu value=1 1i", "bad timestamp '1i'"),
    (b"cpu value=1 +1", "bad timestamp '+1'"),
    (b"cpu value=1 1 2", "unexpected text after the timestamp: '2'"),
    (b"cpu value=1 x 2", "bad timestamp 'x'"),
    (b"cpu value=1 12\\ 3", "bad timestamp '12\\\\ 3'"),
    (b"cpu value=1 9223372036854775807", "timestamp: out of range (1677-09-21 to 2262-04-11)"),
    (b"cpu value=1 -9223372036854775807", "timestamp: out of range (1677-09-21 to 2262-04-11)"),
    (b"cpu value=1 9223372036854775808", "timestamp: out of range"),
    (b"cpu value=1 -9223372036854775808", "timestamp: out of range"),
    (b"cpu value=1 " + b"9" * 5000, "timestamp: out of range"),
    # Escapes.
    (b"cpu\\", "missing fields"),
    (b"cpu,host=a\\", "missing fields"),
    (b"cpu\\ value=1", "missing fields"),
    (b"m,k=a\\\\ value=1", "tag 'k': unescaped '=' in value"),
    (b"m a\\\\=1", "field 'a\\\\\\\\': key ends in a backslash"),
    (b"m a\\\\=1,b=2", "key ends in a backslash"),
    (b"m b=2,a\\\\\\\\=1", "key ends in a backslash"),
    (b"cpu value=1 5\\", "backslash at end of line"),
    (b"cpu value=1 5\\\\\\", "backslash at end of line"),
    # Bytes.
    (b"cpu value=1\xff", "invalid UTF-8"),
    (b"\xff value=1", "invalid UTF-8"),
    (b"cpu,host=\xed\xa0\x80 value=1", "invalid UTF-8"),
    (b"cpu value=1\r\r", "bad value '1\\r"),
    # The rules every sample meets.
    (b"c\x01pu value=1", "name: control characters"),
    (b"cpu f\x7f=1", "name: control characters"),
    ("cpu\u0085 value=1".encode(), "name: control characters"),
    (b"cpu,host=a\tb value=1", "tags: control characters"),
    (b"m" * (MAX_NAME - 1) + b" f=1", f"longer than {MAX_NAME} characters"),
    (b"m," + b"k" * (MAX_TAG_KEY + 1) + b"=v value=1", f"keys must have 1 to {MAX_TAG_KEY} characters"),
    (b"m,k=" + b"v" * (MAX_TAG_VALUE + 1) + b" value=1", f"longer than {MAX_TAG_VALUE} characters"),
    (b"m," + b",".join(b"k%d=v" % i for i in range(MAX_TAGS + 1)) + b" value=1", f"more than {MAX_TAGS}"),
]


# (line, reason substring): lines that open a string and do not close it.  Alone, each is rejected with
# its reason; in a body, its line runs on to the end (InfluxDB's scanner), and is rejected as one.
UNTERMINATED: list[tuple[bytes, str]] = [
    (b'cpu s="abc', "field 's': unterminated string"),
    (b'cpu s="abc\\" 5', "field 's': unterminated string"),
    (b'cpu s=",v=1', "field 's': unterminated string"),
    (b'cpu s="abc\\', "backslash at end of line"),
    (b'cpu value=1 "', "bad timestamp"),
]


def as_bodies(body: bytes) -> list[bytes]:
    """`body` alone, and after a comment that turns off the body-wide fast path."""
    return [body, NOT_PLAIN + b"\n" + body]


class GrammarTests(SynchronousTestCase):
    """Each corner case of the reference parses to the samples VictoriaMetrics would make."""

    def test_table_size(self) -> None:
        """The grammar table covers at least 40 cases and the malformed table at least 40."""
        self.assertGreaterEqual(len(GRAMMAR), 40)
        self.assertGreaterEqual(len(MALFORMED), 40)

    def test_grammar(self) -> None:
        """Every row gives its samples, with the value's type, and its count of string fields."""
        for body, precision, samples, skipped in GRAMMAR:
            for variant in as_bodies(body):
                parsed = parse(variant, PRECISIONS[precision], NOW)
                self.assertEqual(
                    (parsed.samples, parsed.skipped, parsed.rejected, parsed.errors),
                    (samples, skipped, 0, []),
                    variant,
                )
                for got, want in zip(parsed.samples, samples, strict=True):
                    self.assertIs(type(got.value), type(want.value), variant)
                # Byte for byte the storage form of `ingest.sample`: one ujson.dumps of each sample.
                self.assertEqual(parsed.lines, [ujson.dumps(sample._asdict()) for sample in samples], variant)

    def test_grammar_in_a_batch(self) -> None:
        """All the rows of one precision in one body give all their samples, in order."""
        for precision, rows in itertools.groupby(
            sorted(GRAMMAR, key=lambda row: row[1]), key=lambda row: row[1]
        ):
            rows_list = list(rows)
            body = b"\n".join(row[0] for row in rows_list)
            parsed = parse(body, PRECISIONS[precision], NOW)
            self.assertEqual(parsed.samples, [sample for row in rows_list for sample in row[2]], precision)
            self.assertEqual(parsed.skipped, sum(row[3] for row in rows_list))
            self.assertEqual((parsed.rejected, parsed.errors), (0, []))

    def test_samples_are_valid(self) -> None:
        """Every sample of the table passes `sample.make`, the JSON sample's rules."""
        for body, precision, _, _ in GRAMMAR:
            for sample in parse(body, PRECISIONS[precision], NOW).samples:
                self.assertEqual(make(*sample), sample)

    def test_precisions(self) -> None:
        """Each precision name counts its unit in nanoseconds; v1's short names alias v2's."""
        self.assertEqual(
            PRECISIONS,
            {
                "ns": 1,
                "n": 1,
                "us": 1_000,
                "u": 1_000,
                "ms": 1_000_000,
                "s": 1_000_000_000,
                "m": 60_000_000_000,
                "h": 3_600_000_000_000,
            },
        )
        for unit in PRECISIONS.values():
            self.assertIs(type(unit), int)

    def test_absent_timestamp_is_now(self) -> None:
        """A point without a timestamp takes `now_ns`, whatever the precision."""
        for unit in PRECISIONS.values():
            self.assertEqual(parse(b"cpu value=1", unit, 42).samples, [s("cpu", 1.0, 42)])

    def test_tags_shared(self) -> None:
        """A line's samples hold equal tags, and a line's tags are not another's when the heads differ."""
        parsed = parse(b"cpu,host=a x=1,y=2\ncpu,host=b x=3", 1, NOW)
        self.assertEqual(
            [sample.tags for sample in parsed.samples], [{"host": "a"}, {"host": "a"}, {"host": "b"}]
        )


class MalformedTests(SynchronousTestCase):
    """Each broken rule rejects its line, with a reason that names what is wrong."""

    def test_alone(self) -> None:
        """A malformed line alone: nothing accepted, one rejection at line 1 with its reason."""
        for line, reason in MALFORMED + UNTERMINATED:
            for variant, number in zip(as_bodies(line), (1, 2), strict=True):
                parsed = parse(variant, 1, NOW)
                self.assertEqual((parsed.samples, parsed.skipped, parsed.rejected), ([], 0, 1), variant)
                self.assertEqual(len(parsed.errors), 1, variant)
                self.assertEqual(parsed.errors[0][0], number, variant)
                self.assertIn(reason, parsed.errors[0][1], variant)

    def test_in_a_batch(self) -> None:
        """Between good lines, a malformed line is reported by its line number and the others are kept."""
        for line, reason in MALFORMED:
            body = b'cpu value=1,s="x"\n# comment\n' + line + b"\r\n\nmem value=2"
            parsed = parse(body, 1, NOW)
            self.assertEqual(parsed.samples, [s("cpu", 1.0), s("mem", 2.0)], line)
            self.assertEqual(parsed.skipped, 1, line)
            self.assertEqual(parsed.rejected, 1, line)
            self.assertEqual([number for number, _ in parsed.errors], [3], line)
            self.assertIn(reason, parsed.errors[0][1], line)

    def test_unterminated_in_a_batch(self) -> None:
        """A line that opens a string takes the lines after it: one rejection, the lines before kept."""
        for line, _ in UNTERMINATED:
            body = b'cpu value=1,s="x"\n# comment\n' + line + b"\r\n\nmem value=2\nx y=3"
            parsed = parse(body, 1, NOW)
            self.assertEqual((parsed.samples, parsed.skipped), ([s("cpu", 1.0)], 1), line)
            self.assertEqual([number for number, _ in parsed.errors], [3], line)

    def test_reason_quotes_are_bounded(self) -> None:
        """A reason quotes at most 64 characters of what it names."""
        parsed = parse(b"cpu " + b"k" * 1000 + b"=" + b"x" * 1000, 1, NOW)
        self.assertLess(len(parsed.errors[0][1]), 200)


class PartialBatchTests(SynchronousTestCase):
    """A body with bad lines keeps its good ones: InfluxDB's partial write."""

    def test_good_and_bad(self) -> None:
        """Good lines are kept in order; bad ones are counted and listed with 1-based line numbers."""
        body = b"\n".join(
            [
                b"cpu,host=a usage=0.5 1700000000000000000",
                b"cpu,host=a usage=oops 1700000000000000000",
                b"",
                b"mem,host=a used=10i,free=20i",
                b"disk,host=a used=1,bad=,free=2",
                b'log,host=a msg="hello",level=3i',
            ]
        )
        parsed = parse(body, 1, NOW)
        self.assertEqual(
            parsed.samples,
            [
                s("cpu_usage", 0.5, 1700000000000000000, host="a"),
                s("mem_used", 10, host="a"),
                s("mem_free", 20, host="a"),
                s("log_level", 3, host="a"),
            ],
        )
        self.assertEqual(parsed.skipped, 1)
        self.assertEqual(parsed.rejected, 2)
        self.assertEqual(
            parsed.errors, [(2, "field 'usage': bad value 'oops'"), (5, "field 'bad': missing value")]
        )

    def test_line_counts_once(self) -> None:
        """A line with many bad fields is one rejection, and its string fields are not counted."""
        parsed = parse(b'cpu a=x,b=y,c=z,s="str"\ncpu,host=a a=x,b=y', 1, NOW)
        self.assertEqual((parsed.samples, parsed.skipped, parsed.rejected), ([], 0, 2))
        self.assertEqual([number for number, _ in parsed.errors], [1, 2])

    def test_whole_line_or_nothing(self) -> None:
        """Fields before the bad one in the same line are not kept either."""
        parsed = parse(b"cpu a=1,b=2,c=bad\ncpu d=4", 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu_d", 4.0)])

    def test_error_limit(self) -> None:
        """`MAX_ERRORS` bad lines are listed, and every bad line is counted."""
        self.assertEqual(MAX_ERRORS, 100)
        lines = [b"cpu value=1"] + [b"cpu value=bad"] * (MAX_ERRORS + 50) + [b"mem value=2"]
        parsed = parse(b"\n".join(lines), 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu", 1.0), s("mem", 2.0)])
        self.assertEqual(parsed.rejected, MAX_ERRORS + 50)
        self.assertEqual([number for number, _ in parsed.errors], list(range(2, MAX_ERRORS + 2)))

    def test_error_limit_edge(self) -> None:
        """`MAX_ERRORS` bad lines are all listed; one more is counted, not listed."""
        for count in (MAX_ERRORS, MAX_ERRORS + 1):
            parsed = parse(b"\n".join([b"x"] * count), 1, NOW)
            self.assertEqual((parsed.rejected, len(parsed.errors)), (count, MAX_ERRORS))

    def test_newline_in_a_string(self) -> None:
        """A raw newline inside a string does not end the line, as in InfluxDB; line numbers count on."""
        parsed = parse(b'cpu value=1\nlog msg="two\nlines",n=1i\nmem value=2\nbad\nx y=3', 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu", 1.0), s("log_n", 1), s("mem", 2.0), s("x_y", 3.0)])
        self.assertEqual((parsed.skipped, parsed.errors), (1, [(5, "missing fields")]))

    def test_unterminated_string(self) -> None:
        """A string that is never closed takes the rest of the body into its line, which is rejected."""
        parsed = parse(b'cpu value=1\nlog msg="open,n=1i\nmem value=2\n\nx y=3', 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu", 1.0)])
        self.assertEqual(parsed.errors, [(2, "field 'msg': unterminated string")])

    def test_backslash_before_a_newline(self) -> None:
        """A backslash right before a newline escapes it (InfluxDB's scanner): the lines are one."""
        parsed = parse(b"cpu value=1 5\\\nmem value=2\nx y=3", 1, NOW)
        self.assertEqual(parsed.samples, [s("x_y", 3.0)])
        self.assertEqual([number for number, _ in parsed.errors], [1])

    def test_where_a_quote_opens_a_string(self) -> None:
        """Only a quote after a field's '=' opens a string; in a name or a comment it is a character."""
        body = b'm,t=" a=1\n# "x"\nm "k=2\nm s="a\\"\nb",v=3\nz w=4'
        parsed = parse(body, 1, NOW)
        self.assertEqual(parsed.samples, [s("m_a", 1.0, t='"'), s('m_"k', 2.0), s("m_v", 3.0), s("z_w", 4.0)])
        self.assertEqual((parsed.skipped, parsed.errors), (1, []))

    def test_invalid_utf8_line(self) -> None:
        """Invalid UTF-8 rejects its line; the lines around it, non-ASCII ones included, are kept."""
        body = b"cpu value=1\n\xff value=2\nmem,host=" + "é".encode() + b" value=3\n"
        parsed = parse(body, 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu", 1.0), s("mem", 3.0, host="é")])
        self.assertEqual(parsed.errors, [(2, "invalid UTF-8")])

    def test_timestamps_read_again_after_a_rejection(self) -> None:
        """A bad timestamp rejects every line that carries it; good ones around it keep theirs."""
        far = b"9223372036854776"  # past 2262 in microseconds
        bad_b, bad_c = b"b value=1 " + far, b"c value=1 " + far
        body = b"\n".join([b"a value=1 5", bad_b, bad_c, b"d value=1 5", b"e value=1", b"f value=1 6"])
        parsed = parse(body, 1_000, NOW)
        self.assertEqual(
            parsed.samples, [s("a", 1.0, 5_000), s("d", 1.0, 5_000), s("e", 1.0, NOW), s("f", 1.0, 6_000)]
        )
        self.assertEqual([number for number, _ in parsed.errors], [2, 3])

    def test_heads_checked_again_after_a_rejection(self) -> None:
        """A bad head rejects every line that carries it; a good head serves every line after it."""
        body = b"cpu,a=1,a=2 x=1\ncpu,a=1,a=2 x=2\ncpu,a=1 x=3\ncpu,a=1 x=4"
        parsed = parse(body, 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu_x", 3.0, a="1"), s("cpu_x", 4.0, a="1")])
        self.assertEqual([number for number, _ in parsed.errors], [1, 2])

    def test_names_checked_per_line(self) -> None:
        """A bad name rejects each line that makes it, even after a good line checked other names."""
        long_field = b"f" * MAX_NAME
        body = b"cpu x=1\ncpu " + long_field + b"=1\ncpu x=2\ncpu " + long_field + b"=2"
        parsed = parse(body, 1, NOW)
        self.assertEqual(parsed.samples, [s("cpu_x", 1.0), s("cpu_x", 2.0)])
        self.assertEqual([number for number, _ in parsed.errors], [2, 4])

    def test_nothing(self) -> None:
        """An empty body, or one of comments and blank lines, gives nothing and rejects nothing."""
        for body in [b"", b"\n", b"\r\n", b"# only\n  # comments\n\n \t \n"]:
            self.assertEqual(parse(body, 1, NOW), Parsed([], 0, 0, []))


# Property tests.

NAME_TEXT = st.characters(blacklist_categories=("Cc", "Cs"))
BOOLEAN_SPELLINGS = {1: ["t", "T", "true", "True", "TRUE"], 0: ["f", "F", "false", "False", "FALSE"]}


def escape_measurement(text: str) -> str:
    """What InfluxDB's clients write: a backslash before each comma and space, none before a backslash."""
    return text.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str) -> str:
    """The same for tag keys, tag values and field keys, with equals signs too."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# Texts a client can write (`escape_measurement`, `escape_key`): InfluxDB's parser reads a backslash at
# the end of a name, tag or field key as escaping the separator after it, and in a field key a written
# backslash before a comma, equals sign, space or quote pairs with the client's escape.
HEAD_TEXT = st.text(NAME_TEXT, min_size=1, max_size=10).filter(lambda text: not text.endswith("\\"))
FIELD_KEY_TEXT = HEAD_TEXT.filter(lambda text: re.search(r'\\[,= "]', text) is None)


@st.composite
def field_values(draw: Any) -> tuple[str, int | float | None]:
    """(value as written, expected sample value or None for a string)."""
    kind = draw(st.sampled_from(["float", "int", "uint", "bool", "string"]))
    if kind == "float":
        number = draw(st.floats(allow_nan=False, allow_infinity=False))
        return repr(number), number
    if kind == "int":
        integer = draw(st.integers(-(2**63), 2**63 - 1))
        return f"{integer}i", integer
    if kind == "uint":
        unsigned = draw(st.integers(0, 2**64 - 1))
        return f"{unsigned}u", unsigned
    if kind == "bool":
        truth = draw(st.sampled_from([0, 1]))
        return draw(st.sampled_from(BOOLEAN_SPELLINGS[truth])), truth
    text = draw(st.text(NAME_TEXT, max_size=20))
    return f'"{escape_string(text)}"', None


@st.composite
def points(draw: Any) -> tuple[str, list[Sample], int, int]:
    """One line, its samples, its count of string fields, and the unit it was written in."""
    measurement = draw(HEAD_TEXT.filter(lambda m: not m.startswith("#")))
    tags = draw(st.dictionaries(HEAD_TEXT, HEAD_TEXT, max_size=4))
    keys = draw(st.lists(st.one_of(st.just("value"), FIELD_KEY_TEXT), min_size=1, max_size=4, unique=True))
    values = [draw(field_values()) for _ in keys]
    unit = draw(st.sampled_from(sorted(PRECISIONS.values())))
    stamp = draw(st.none() | st.integers(0, MAX_NS // unit))
    gap = " " * draw(st.integers(1, 3))
    head = escape_measurement(measurement) + "".join(
        f",{escape_key(key)}={escape_key(value)}" for key, value in tags.items()
    )
    field_set = ",".join(f"{escape_key(key)}={text}" for key, (text, _) in zip(keys, values, strict=True))
    line = head + gap + field_set + ("" if stamp is None else gap + str(stamp))
    timestamp = NOW if stamp is None else stamp * unit
    samples = [
        Sample(measurement if key == "value" else f"{measurement}_{key}", value, timestamp, tags)
        for key, (_, value) in zip(keys, values, strict=True)
        if value is not None
    ]
    strings = sum(value is None for _, value in values)
    return line, samples, strings, unit


GRAMMAR_TEXT = st.text(
    st.sampled_from(list(' ,="\\\\=#\t\r\nabcfituTFeE0123456789.-+_é\x00\ud7ff')), max_size=80
)


# Lines near the inline path's edge: one field whose value may or may not be a plain float.
COMMON_LINES = st.builds(
    "{}{} {}={}{}".format,
    st.sampled_from(["cpu", "cpu,host=a", "m,t=é", "#c", "cpu,host=a,host=b", "a b"]),
    st.sampled_from(["", " "]),
    st.sampled_from(["usage", "value", "", "k,x", "_x"]),
    st.sampled_from(
        ["0.5", "-.5", "1.", "1e5", "1E-7", "1e999", "-1e999", "1_0", "nan", "inf", "\u0661", "5i", "5u", "t",
         '"s"', "1.5.5", "--1", "+1", "0x1", "", "1=2", "7"]
    ),
    st.sampled_from(["", " 1700000000", "  1700000000", " -5", " x", " 1 2", " 99999999999999999999"]),
)  # fmt: skip


# Parts of lines near the decimal path's edges, (taken, left to the general path): heads, keys, values
# and timestamps that it takes, and ones it must leave alone (ints, booleans, float()'s own extras,
# exponents, values past a double, bad names, tags and timestamps).
DECIMAL_HEADS = (
    ["cpu", "cpu,host=a", "cpu,host=b,region=eu", "m,t=é", "mem", "disk,path=/var/x,fs=ext4", "a/b,c<d=e&f>"],
    [
        "cpu,host=",
        "cpu,host=a,host=b",
        ",x=1",
        "cpu,a",
        "m\x01",
        "cpu,host=a=b",
        "m" * 250,
        "c\tpu",
        "cpu\xa0",
    ],
)
DECIMAL_KEYS = (
    ["usage", "value", "k%s", "k%", "é", "a_b", "n1", "1", "-.5", "usage"],
    ["", "x\x7f", "k" * 260, "a\rb", "\xa0"],
)
DECIMAL_VALUES = (
    ["0.5", "-.5", "1.", "12.75", "0", "-0", "-0.0", "7", "9" * 290, "9007199254740993", "1" * 280 + ".5"],
    ["1e5", "1E-7", "1e+5", "1e999", "1_0", "nan", "inf", "-inf", "\u0661", "5i", "-5i", "5u", "t", "FALSE",
     "1.5.5", "--1", "+1", "-", ".", "", "1=2", "0" * 320, "1" * 310 + ".5", "0.1\t", "\t1", "1\r", "\xa01",
     "0x1", "1e", "1-2", "٣", "1,"],
)  # fmt: skip
DECIMAL_STAMPS = (
    ["", " 1700000000000000000", " -5", " 0", " 1700000000000000000"],
    ["  1700000000", " x", " 1 2", " 99999999999999999999", " 1700000000 ", " ", " ٣", " -", "\t5"],
)
DECIMAL_SEPARATORS = ([","], [",,", "=", ", ", ";"])
DECIMAL_GAPS = ([" "], ["  ", "\t", " \t"])
DECIMAL_ENDS = ([("", "")], [(" ", ""), ("", " "), ("", "\r"), ("#", ""), ("\t", "")])


@st.composite
def decimal_lines(draw: Any) -> str:
    """One line made of parts the decimal path takes but for at most one, which it must leave to the
    general path."""
    fields = draw(st.integers(1, 4))
    odd = draw(st.integers(0, 5 + 2 * fields))  # which part is odd, if any
    kinds = [DECIMAL_ENDS, DECIMAL_HEADS, DECIMAL_GAPS, DECIMAL_SEPARATORS, DECIMAL_STAMPS]
    kinds += [DECIMAL_KEYS, DECIMAL_VALUES] * fields
    parts = [draw(st.sampled_from(kind[index == odd])) for index, kind in enumerate(kinds)]
    (before, after), head, gap, separator, stamp, *pairs = parts
    field_set = separator.join(f"{key}={value}" for key, value in zip(pairs[::2], pairs[1::2], strict=True))
    return before + head + gap + field_set + stamp + after


# Lines that turn the decimal path off for their whole body: a backslash or a double quote.
NOT_DECIMAL_LINES = [r"cpu,host=a\ b usage=0.5", r"cp\,u a=1", 'cpu q"=1', r"cpu w\=x=1", 'cpu s="s",a=1',
                     'cpu s="a,b c" 5', "cpu a=1\\"]  # fmt: skip


@st.composite
def decimal_bodies(draw: Any) -> list[str]:
    """The lines of a body, mostly ones the decimal path takes; in half the bodies, one line with a
    backslash or a double quote that turns it off."""
    lines = draw(
        st.lists(
            st.one_of(decimal_lines(), decimal_lines(), decimal_lines(), st.just(""), COMMON_LINES),
            max_size=8,
        )
    )
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(NOT_DECIMAL_LINES)))
    return lines


def scan_lines(text: str) -> list[str]:
    """InfluxDB's ``scanLine`` (models/points.go), character by character, as the reference for
    `_logical_lines`: the lines of `text`, empty ones included."""
    lines = []
    position = 0
    while position <= len(text):
        index = position
        quoted = fields = False
        equals = commas = 0
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 2
                continue
            if char == " ":
                fields = True
            if fields:
                if not quoted and char == "=":
                    equals += 1
                elif not quoted and char == ",":
                    commas += 1
                elif char == '"' and equals > commas:
                    quoted = not quoted
            if char == "\n" and not quoted:
                break
            index += 1
        lines.append(text[position : min(index, len(text))])
        position = index + 1
    return lines


# Lines made of what the line scanner looks at.
SCANNED_TEXT = st.text(st.sampled_from(list(' ,="\\\nab#')), max_size=60)


class DecimalPathTests(SynchronousTestCase):
    """The decimal path, which reads plain lines of float fields a shape at a time, at its edges."""

    def test_runs_and_the_general_path_interleave(self) -> None:
        """Lines it takes and lines it leaves give their samples in input order."""
        body = b"cpu a=1,b=2 5\nmem used=3i,free=0.5 5\ncpu a=4,b=5 6\n# c\ncpu b=6,a=7 6\nbad\ncpu a=8 7\n"
        parsed = parse(body, 1, NOW)
        expected = [s("cpu_a", 1.0, 5), s("cpu_b", 2.0, 5), s("mem_used", 3, 5), s("mem_free", 0.5, 5)]
        expected += [s("cpu_a", 4.0, 6), s("cpu_b", 5.0, 6), s("cpu_b", 6.0, 6), s("cpu_a", 7.0, 6)]
        self.assertEqual(parsed.samples, [*expected, s("cpu_a", 8.0, 7)])
        self.assertEqual(parsed.errors, [(6, "missing fields")])
        self.assertEqual(parsed, parse(body, 1, NOW, inline=False))

    def test_values_as_the_general_path_writes_them(self) -> None:
        """Each value is stored as ujson writes the float that `float` reads from it."""
        values = ["-0", "-0.0", "1.", "-.5", "007", "0.30000000000000001", "1" * 290, "9007199254740993"]
        body = "\n".join(f"m v={value}" for value in values).encode()
        stored = [line[line.index('"value":') :] for line in parse(body, 1, 1).lines]
        self.assertEqual(stored[:2], ['"value":-0.0,"timestamp":1,"tags":{}}'] * 2)
        self.assertEqual(parse(body, 1, 1), parse(body, 1, 1, inline=False))
        self.assertEqual([sample.value for sample in parse(body, 1, 1).samples], [float(v) for v in values])

    def test_a_value_that_is_not_a_decimal(self) -> None:
        """A value of digits, points and minus signs that `float` refuses sends the body to the general
        path, which rejects its line alone."""
        body = b"cpu a=1,b=2 5\ncpu a=1-2,b=3 5\ncpu a=.,b=3 5\ncpu a=3,b=4 5"
        parsed = parse(body, 1, NOW)
        self.assertEqual(parsed.rejected, 2)
        self.assertEqual(len(parsed.lines), 4)
        self.assertEqual(parsed, parse(body, 1, NOW, inline=False))

    def test_shapes_are_checked_whole(self) -> None:
        """A field set with the keys of a known shape but its separators moved, or a key with a percent
        sign (the shape's template), is judged as the general path judges it."""
        for body in [b"cpu a=1,b=2\ncpu a,1=b=2", b"cpu a=1,b=2\ncpu a=1=b,2", b"c k%s=1,k%=2\nc k%s=3,k%=4"]:
            self.assertEqual(parse(body, 1, NOW), parse(body, 1, NOW, inline=False), body)


class PropertyTests(SynchronousTestCase):
    """The module's contract on generated input."""

    @settings(max_examples=1000, deadline=None)
    @given(SCANNED_TEXT)
    def test_lines_cut_as_influxdb_cuts_them(self, text: str) -> None:
        """`_logical_lines` cuts a body where InfluxDB's scanner does, and numbers each line by its first."""
        got = list(_logical_lines(text))
        self.assertEqual([line for _, line in got], scan_lines(text), text)
        numbers = [1 + sum(line.count("\n") + 1 for line in scan_lines(text)[:i]) for i in range(len(got))]
        self.assertEqual([number for number, _ in got], numbers, text)

    @settings(max_examples=1000, deadline=None)
    @given(SCANNED_TEXT, st.integers(0, 60))
    def test_line_ends_agree(self, text: str, start: int) -> None:
        """The quick line end of a line with a quote is the scanner's, backslashes or not."""
        start = min(start, len(text))
        self.assertEqual(_quoted_line_end(text, start), _line_end(text, start), (text, start))

    def check_invariants(self, body: bytes, parsed: Any) -> None:
        self.assertIsInstance(parsed, Parsed)
        self.assertEqual(len(parsed.errors), min(parsed.rejected, MAX_ERRORS))
        lines = body.count(b"\n") + 1
        for number, reason in parsed.errors:
            self.assertTrue(1 <= number <= lines, (number, lines))
            self.assertIsInstance(reason, str)
            self.assertTrue(reason)
        for sample in parsed.samples:
            self.assertEqual(make(*sample), sample)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=200))
    def test_any_bytes(self, body: bytes) -> None:
        """Any bytes give a `Parsed` of valid samples and listed reasons; `parse` never raises."""
        self.check_invariants(body, parse(body, 1, NOW))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(GRAMMAR_TEXT, max_size=5), st.sampled_from(sorted(PRECISIONS.values())))
    def test_grammar_characters(self, lines: list[str], unit: int) -> None:
        """Lines made of the grammar's own characters give a `Parsed`, never an exception."""
        body = "\n".join(lines).encode("utf-8")
        self.check_invariants(body, parse(body, unit, NOW))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(points(), min_size=1, max_size=4), st.booleans())
    def test_round_trip(self, generated: list[tuple[str, list[Sample], int, int]], crlf: bool) -> None:
        """Points encoded with the reference's escaping parse back to their samples, one unit a body."""
        unit = generated[0][3]
        lines = [line for line, _, _, line_unit in generated if line_unit == unit]
        body = ("\r\n" if crlf else "\n").join(lines).encode("utf-8")
        parsed = parse(body, unit, NOW)
        expected = [
            sample for _, samples, _, line_unit in generated if line_unit == unit for sample in samples
        ]
        self.assertEqual(parsed.errors, [])
        self.assertEqual(parsed.samples, expected)
        for got, want in zip(parsed.samples, expected, strict=True):
            self.assertIs(type(got.value), type(want.value))
        self.assertEqual(
            parsed.skipped, sum(strings for _, _, strings, line_unit in generated if line_unit == unit)
        )

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(
            st.one_of(
                GRAMMAR_TEXT,
                COMMON_LINES,
                points().map(lambda point: point[0]),
            ),
            max_size=6,
        ),
        st.sampled_from(sorted(PRECISIONS.values())),
    )
    def test_inline_path_agrees(self, lines: list[str], unit: int) -> None:
        """The inline path of the common point and the general path give the same `Parsed`: the
        same lines, counts and reasons, whatever the body."""
        body = "\n".join(lines).encode("utf-8", "surrogatepass")
        self.assertEqual(parse(body, unit, NOW), parse(body, unit, NOW, inline=False), body)

    @settings(max_examples=2000, deadline=None)
    @given(decimal_bodies(), st.sampled_from(sorted(PRECISIONS.values())))
    def test_decimal_path_agrees(self, lines: list[str], unit: int) -> None:
        """The decimal path (plain lines of float fields, read a shape at a time) and the general path
        give the same `Parsed`, whatever the lines around it: ints, booleans, strings, escapes, unicode,
        empty and duplicate fields, float()'s own extras, bad names, tags and timestamps."""
        body = "\n".join(lines).encode("utf-8", "surrogatepass")
        self.assertEqual(parse(body, unit, NOW), parse(body, unit, NOW, inline=False), body)

    @settings(max_examples=300, deadline=None)
    @given(st.text(st.sampled_from(list(" ,=\\abcitu0123456789.-é")), min_size=1, max_size=40))
    def test_field_scanners_agree(self, rest: str) -> None:
        """Without strings, the string-aware field scanner cuts fields as the plain one does."""
        rest = rest.rstrip(" ")
        if not rest.strip(" "):
            return
        outcomes: list[object] = []
        for scanner in (_fields, _quoted_fields):
            try:
                outcomes.append(scanner(rest, False))
            except IngestError as error:
                outcomes.append(error.detail)
        self.assertEqual(outcomes[0], outcomes[1], rest)
