"""The sample record, its validation and its storage encoding.  Pure.

A stored sample is one JSON object per line with exactly the keys ``name``,
``value``, ``timestamp`` (integer nanoseconds since the epoch) and ``tags``
(an object, possibly empty).  Validation follows PRODUCT.md:

- ``name``: a non-empty string of at most `MAX_NAME` characters, with no
  control characters (C0, DEL, C1) and no lone surrogates;
- ``value``: a finite number; not a boolean; integers within 64 bits;
- ``timestamp``: optional Unix seconds (integer or fraction), negative before
  1970, within what InfluxDB takes: int64 nanoseconds but its two least and its
  greatest values (`MIN_NS`..`MAX_NS`, 1677-09-21 to 2262-04-11); absent (or
  null) means the time of receipt;
- ``tags``: optional object of at most `MAX_TAGS` string pairs; keys non-empty
  and at most `MAX_TAG_KEY` characters, values at most `MAX_TAG_VALUE`, with
  no control characters;
- any other key is rejected, so that a typo cannot silently drop data.

`from_json` validates a decoded JSON object; `make` validates the parts that
another format decoded (line protocol), with the same checks and messages.
`JsonSample` is the sample as msgspec decodes it (`ingest.bodies`' default
path), with the rules msgspec checks in C; `LineEncoder.sample_line` checks
the rest and encodes it, byte for byte as `LineEncoder.line` does.
Every rejection raises `IngestError(400, "invalid sample", detail)`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, NamedTuple

import msgspec
import ujson

from ingest.errors import IngestError

MAX_NAME = 256
MAX_TAGS = 256
MAX_TAG_KEY = 256
MAX_TAG_VALUE = 1024

_NS_PER_S = 1_000_000_000
MIN_NS = -(2**63) + 2
"""The earliest timestamp, 1677-09-21T00:12:43.145224194Z: InfluxDB keeps the two below for itself."""
MAX_NS = 2**63 - 2
"""The latest timestamp, 2262-04-11T23:47:16.854775806Z: InfluxDB keeps int64's greatest for itself."""
_MIN_SECONDS = -(-MIN_NS // _NS_PER_S)
_MAX_SECONDS = MAX_NS // _NS_PER_S
_OUT_OF_RANGE = "timestamp: out of range (1677-09-21 to 2262-04-11)"
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_KEYS = frozenset(("name", "value", "timestamp", "tags"))
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
_TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_KEY)]
_TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_VALUE)]


class JsonSample(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON sample as msgspec decodes it: the rules msgspec can check in C, checked there.

    Types (no boolean value, no null name), lengths, the tag count, the timestamp's range in whole
    seconds, and unknown keys.  msgspec cannot bound an integer past int64, so a value above int64's
    greatest fails here and is judged by `_validated` (uint64's greatest is accepted there); nor does
    it see control characters in a string (but raw ones in the JSON text): `LineEncoder.sample_line`
    checks those.  msgspec's messages differ from ours: a sample it refuses is judged again by
    `_validated`, which gives the message (`ingest.bodies`, the msgspec path).
    """

    name: _Name
    # Floats from 1e16 on are written by msgspec as 1e16 and by ujson as 1e+16: such a rare value takes
    # the ujson path, so that `plain_lines` can let msgspec write the others.
    value: (
        Annotated[float, msgspec.Meta(gt=-1e16, lt=1e16)]
        | Annotated[int, msgspec.Meta(ge=_INT_MIN, le=2**63 - 1)]
    )
    timestamp: (
        Annotated[float, msgspec.Meta(gt=_MIN_SECONDS - 1, lt=_MAX_SECONDS + 1)]
        | Annotated[int, msgspec.Meta(ge=_MIN_SECONDS, le=_MAX_SECONDS)]
        | None
    ) = None
    tags: Annotated[dict[_TagKey, _TagValue], msgspec.Meta(max_length=MAX_TAGS)] = {}


class Sample(NamedTuple):
    name: str
    value: int | float
    timestamp: int
    tags: dict[str, str]


class Converted(NamedTuple):
    """What a decoder of an agent's format (remote write, OTLP, collectd) makes of one body.

    `lines` are the accepted samples in storage form (one JSON object each, no newline: what
    `storage_line` writes), in input order; `rejected` counts the invalid points and `errors` lists
    the first of them as ``(index of the point from 0, reason)``; `skipped` counts what is not
    stored by reason (``nan``, ``infinity``, ``exemplar``, ...), not an error.
    """

    lines: list[str]
    rejected: int
    errors: list[tuple[int, str]]
    skipped: dict[str, int]


def invalid(detail: str) -> IngestError:
    return IngestError(400, "invalid sample", detail)


def from_json(obj: Any, now_ns: int) -> Sample:
    """Validate one decoded JSON value as a sample; `now_ns` stands in for a missing timestamp."""
    return Sample(*_validated(obj, now_ns))


def storage_line(obj: Any, now_ns: int) -> str:
    """`from_json` and `encode` in one pass, for the hot path: the storage line, without its newline.

    Measured on a 100-sample body: 5.5 us a sample against 6.6 through a
    `Sample` and `encode` (no record built, one loop instead of two).
    """
    name, value, timestamp, tags = _validated(obj, now_ns)
    return ujson.dumps({"name": name, "value": value, "timestamp": timestamp, "tags": tags})


class LineEncoder:
    """`storage_line` for the samples of one body, remembering what the body repeats.

    A batch usually repeats its names and its tags: each distinct name is
    checked and encoded once, and a tags object equal to the last one seen
    reuses its checks and its encoding (a dict comparison, in C, against a
    Python loop over the pairs).  The line is assembled from the parts'
    encodings: the JSON `storage_line` gives (a property test says so),
    byte for byte but for a repeated tags object's key order, which is
    the order it was first seen in.  Anything unusual, and every error,
    goes through `storage_line`, which has the one set of rules and messages.
    Measured: 2.3 against 4.8 us a sample through `storage_line` (timeit, a
    100-sample body of one series, medians of 5; ujson's decoding, 1.1 us,
    excluded).
    """

    __slots__ = ("_names", "_now_ns", "_now_text", "_tags", "_tags_text")

    def __init__(self, now_ns: int) -> None:
        self._now_ns = now_ns
        self._now_text = str(now_ns)
        self._names: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._tags_text = "{}"

    def sample_line(self, sample: JsonSample) -> str:
        """The storage line of a sample msgspec decoded, byte for byte what `line` gives for the same
        JSON; raises `IngestError` for what `JsonSample` cannot check (control characters, a timestamp
        past `MAX_NS` in nanoseconds), whose message the caller gets from `line` on ujson's decoding.
        """
        name = sample.name
        name_text = self._names.get(name)
        if name_text is None:
            check_name(name)
            name_text = self._names[name] = ujson.dumps(name)
        value = sample.value
        # msgspec refuses NaN and the infinities, and bounds an integer to int64.
        value_text = ujson.dumps(value) if type(value) is float else str(value)
        seconds = sample.timestamp
        timestamp = self._now_text if seconds is None else str(seconds_to_ns(seconds))
        tags = sample.tags
        tags_text = "{}" if not tags else self._tags_text if tags == self._tags else self._new_tags(tags)
        return f'{{"name":{name_text},"value":{value_text},"timestamp":{timestamp},"tags":{tags_text}}}'

    def line(self, obj: Any) -> str:
        """The storage line of one decoded JSON value; raises `IngestError` as `storage_line` does."""
        if type(obj) is not dict or not _KEYS.issuperset(obj):
            return storage_line(obj, self._now_ns)
        name = obj.get("name")
        if type(name) is not str:
            return storage_line(obj, self._now_ns)
        name_text = self._names.get(name)
        if name_text is None:
            check_name(name)
            name_text = self._names[name] = ujson.dumps(name)
        value: Any = obj.get("value")
        kind = type(value)
        if kind is float and value - value == 0.0:  # finite
            value_text = ujson.dumps(value)
        elif kind is int and _INT_MIN <= value <= _INT_MAX:
            value_text = str(value)
        else:
            return storage_line(obj, self._now_ns)
        seconds = obj.get("timestamp")
        timestamp = self._now_text if seconds is None else str(seconds_to_ns(seconds))
        tags = obj.get("tags")
        if not tags:
            if tags is not None and type(tags) is not dict:
                return storage_line(obj, self._now_ns)
            tags_text = "{}"
        else:
            tags_text = self._tags_text if tags == self._tags else self._new_tags(tags)
        return f'{{"name":{name_text},"value":{value_text},"timestamp":{timestamp},"tags":{tags_text}}}'

    def _new_tags(self, tags: Any) -> str:
        """The encoding of a tags object other than the last one seen, checked; it becomes the last."""
        check_tags(tags)
        tags_text: str = ujson.dumps(tags)
        self._tags, self._tags_text = tags, tags_text
        return tags_text


_LINES = msgspec.json.Encoder()
_UNLIKE_UJSON = re.compile(rb'"value":-?0\.0000[1-9]')


def plain(body: bytes) -> bool:
    """Whether a JSON body is plain: ASCII without a backslash, a slash or DEL (scans in C).

    The strings msgspec decodes from it hold printable ASCII only: they need no check for control
    characters, and msgspec writes them as ujson does (but for ``/``, which ujson writes ``\\/``).
    """
    return body.isascii() and b"\\" not in body and b"/" not in body and b"\x7f" not in body


def plain_lines(samples: list[JsonSample], now_ns: int) -> bytes | None:
    """The storage lines of `samples` msgspec decoded from a `plain` body, by msgspec in one call (a
    newline after each), byte for byte what `LineEncoder.sample_line` gives; None when a value would
    be written otherwise than by ujson.

    The timestamps are set in place first: `now_ns` for a missing one, else `seconds_to_ns` (which
    raises `IngestError` past `MAX_NS`), so the samples' timestamps are nanoseconds afterwards,
    whatever the result.  (Setting them costs a tenth of replacing ``"timestamp":null`` in the
    encoded bytes: 26 against 278 us for 1,000 samples, timeit.)  Of the floats, msgspec writes
    those from 1e-5 to 1e-4 without an exponent (``0.00001``), ujson with one (``1e-5``): such a
    value gives None (and `JsonSample` refuses floats from 1e16 on).
    """
    for sample in samples:
        seconds = sample.timestamp
        sample.timestamp = now_ns if seconds is None else seconds_to_ns(seconds)
    data = _LINES.encode_lines(samples)
    if b"0.0000" in data and _UNLIKE_UJSON.search(data):  # one scan in C, the exact test if it hits
        return None
    return data


def _validated(obj: Any, now_ns: int) -> tuple[str, int | float, int, dict[str, str]]:
    """The checks of `from_json`: the common case inline, the check functions for the error detail."""
    if type(obj) is not dict:
        raise invalid("a sample must be a JSON object")
    if not _KEYS.issuperset(obj):
        unknown = sorted(str(key)[:64] for key in obj if key not in _KEYS)
        raise invalid(f"unknown key {unknown[0]!r}")
    name: Any = obj.get("name")
    if type(name) is not str or not name or len(name) > MAX_NAME or not name.isprintable():
        check_name(name)
    value: Any = obj.get("value")
    kind = type(value)
    if kind is float:
        if value - value != 0.0:  # NaN and infinities
            raise invalid("value: must be a finite number")
    elif kind is not int or not _INT_MIN <= value <= _INT_MAX:
        if value is None and "value" not in obj:
            raise invalid("value: missing")
        check_value(value)
    seconds = obj.get("timestamp")
    timestamp = now_ns if seconds is None else seconds_to_ns(seconds)
    tags = obj.get("tags")
    if tags is None:
        tags = {}
    elif tags:
        check_tags(tags)
    elif type(tags) is not dict:
        raise invalid("tags: must be an object of strings")
    return name, value, timestamp, tags


def make(name: str, value: int | float, timestamp: int, tags: dict[str, str]) -> Sample:
    """A sample from parts that another format decoded (line protocol), validated as `from_json` does.

    `timestamp` is integer nanoseconds already.  Each part meets the rule and the message of the JSON
    sample's: the same checks run.  Raises `IngestError` (400 ``invalid sample``).
    """
    check_name(name)
    check_value(value)
    check_timestamp(timestamp)
    if tags:
        check_tags(tags)
    return Sample(name, value, timestamp, tags)


def check_name(name: Any) -> None:
    """A sample name: a non-empty string of at most `MAX_NAME` characters, no control characters."""
    if type(name) is not str or not name:
        raise invalid("name: must be a non-empty string")
    if len(name) > MAX_NAME:
        raise invalid(f"name: longer than {MAX_NAME} characters")
    if not name.isprintable() and _CONTROL.search(name):  # isprintable: a fast C pass
        raise invalid("name: control characters are not allowed")


def check_value(value: Any) -> None:
    """A sample value: a finite float, or an integer from int64's least to uint64's greatest; no bool."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise invalid("value: must be a finite number")
    elif kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise invalid("value: integer out of 64-bit range")
    else:
        raise invalid("value: must be a number")


def check_timestamp(ns: Any) -> None:
    """A timestamp in integer nanoseconds since the epoch, within `MIN_NS`..`MAX_NS`."""
    if type(ns) is not int:
        raise invalid("timestamp: must be integer nanoseconds")
    if not MIN_NS <= ns <= MAX_NS:
        raise invalid(_OUT_OF_RANGE)


def check_tags(tags: Any) -> None:
    """Tags: an object of at most `MAX_TAGS` string pairs within the key and value lengths."""
    if type(tags) is not dict:
        raise invalid("tags: must be an object of strings")
    if len(tags) > MAX_TAGS:
        raise invalid(f"tags: more than {MAX_TAGS}")
    for key, value in tags.items():
        if type(value) is not str:
            raise invalid(f"tags: value of {key!r} must be a string")
        if not key or len(key) > MAX_TAG_KEY:
            raise invalid(f"tags: keys must have 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            raise invalid(f"tags: value of {key!r} longer than {MAX_TAG_VALUE} characters")
        if not (key.isprintable() and value.isprintable()) and (
            _CONTROL.search(key) or _CONTROL.search(value)
        ):
            raise invalid("tags: control characters are not allowed")


def seconds_to_ns(seconds: Any) -> int:
    """Unix seconds (int or float) to integer nanoseconds.

    A float is converted through its shortest decimal form, so that
    ``1700000000.25`` gives ``1700000000250000000`` exactly and ``.1`` is not
    turned into ``.100000024`` by binary rounding: the digits the client wrote
    are the digits stored, up to the float's own precision.
    """
    kind = type(seconds)
    if kind is int:
        if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
            raise invalid(_OUT_OF_RANGE)
        return int(seconds * _NS_PER_S)
    if kind is not float:
        raise invalid("timestamp: must be a number of seconds")
    # The bounds are a second past the whole ones: the fraction is checked in nanoseconds below.
    if not _MIN_SECONDS - 1 < seconds < _MAX_SECONDS + 1:  # also false for NaN
        raise invalid(_OUT_OF_RANGE)
    text = repr(seconds)
    ns: int
    if "e" in text:
        ns = round(seconds * _NS_PER_S)
    else:
        whole, _, fraction = text.lstrip("-").partition(".")
        ns = int(whole) * _NS_PER_S + int((fraction + "00000000")[:9])
        if seconds < 0:
            ns = -ns
    if not MIN_NS <= ns <= MAX_NS:
        raise invalid(_OUT_OF_RANGE)
    return ns


def encode(samples: list[Sample]) -> bytes:
    """The storage form: one JSON object per line, each line ending in a newline.

    ujson with its defaults, as on the hot paths (`storage_line`,
    `LineEncoder`, and `ingest.lineproto`, which writes the same form
    itself): a ``/`` is stored as ``\\/``, which every JSON reader decodes.
    The service's own paths do not call this; tests and tools build stored
    data with it.
    """
    dumps = ujson.dumps
    lines = [
        dumps({"name": name, "value": value, "timestamp": timestamp, "tags": tags})
        for name, value, timestamp, tags in samples
    ]
    lines.append("")
    return "\n".join(lines).encode("utf-8")
