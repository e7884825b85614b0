"""collectd's ``write_http`` JSON to samples.  Pure: no Twisted, no clock; the caller passes the time.

Owns the body of ``POST /collectd`` and its mapping to stored samples.  The
route calls `decode` in the parse pool, after the Content-Type and
Content-Encoding checks (gzip already inflated).

The body is what collectd's ``write_http`` plugin posts with ``Format "JSON"``
(``src/utils_format_json.c``; ``tests/fixtures/collectd.json`` is one POST of
collectd 5.12): an array of value lists, one object each::

    [{"values":[1.5,null,0.25],"dstypes":["gauge","gauge","gauge"],
      "dsnames":["shortterm","midterm","longterm"],"time":1796199706.752,"interval":1.000,
      "host":"a","plugin":"load","plugin_instance":"","type":"load","type_instance":""}]

Mapping (PRODUCT.md): each data source of each value list is one sample.

- ``name`` is ``<plugin>.<type>``, then ``.<dsname>`` unless the data source
  is called ``value``: ``cpu.cpu``, ``load.load.shortterm``,
  ``interface.if_octets.rx``;
- ``tags`` are ``host``, ``plugin_instance`` and ``type_instance``, in that
  order, each where it is not empty (collectd writes ``""`` for no instance);
- ``value`` is the number as written: collectd writes counters, derives and
  absolutes as integers, and gauges with ``%.15g``, so a whole gauge (memory's
  bytes) is stored as an integer too;
- ``timestamp``: ``time``, Unix seconds with a fraction (collectd writes
  ``%.3f``), in nanoseconds by `ingest.sample.seconds_to_ns`, which keeps
  the digits written; a ``time`` of 0, null or absent is ``now_ns``;
- ``null`` values (collectd writes ``null`` for a gauge that is NaN) are
  skipped and counted as ``nan``; NaN and infinities that ujson reads
  (``NaN``, ``Infinity``, ``1e999``; collectd never writes them) as ``nan``
  and ``infinity``;
- ``dstypes``, ``interval`` and ``meta`` are not stored, and other keys are
  ignored: the format is collectd's, and a newer collectd may add keys;
- a notification (what ``write_http`` posts to the same URL with
  ``Notifications true``: an object with ``labels`` and no ``values``, in
  Alertmanager's form; ``tests/fixtures/collectd_notification.json``) is not a
  sample: skipped and counted as ``notification``.

Errors.  A body that is not JSON (``malformed JSON``), or not an array whose
every element is an object (``invalid body``), raises
``IngestError(400, ...)``: it is not collectd's.  A value list that breaks a
rule is rejected whole, with none of its samples stored, and the other value
lists are kept: `Converted.rejected` counts it and `Converted.errors` lists
the first `MAX_ERRORS` as ``(index of the value list in the array from 0,
reason)``.  The rules: ``values`` and ``dsnames`` are arrays of the same
non-zero length, each name a non-empty string, each value a number or null
(an integer within int64's least to uint64's greatest); ``host`` is a
string, ``plugin`` and ``type`` non-empty strings, ``plugin_instance`` and
``type_instance`` strings when present; ``time`` a number of seconds
within `ingest.sample.MIN_NS`..`MAX_NS`; and every name and tag passes
`ingest.sample.check_name` and `check_tags` (length, control characters).
`decode` raises nothing but `IngestError`, for any bytes.

Cost: one ujson parse, then per value list a few type checks and three dict
lookups: each distinct tag set is checked and encoded once a body (about
0.8 us), each distinct name once, each distinct ``time`` converted once
(`seconds_to_ns` costs 1 us); a sample's line is joined from the encoded
parts.  Measured by ``bench/micro_collectd.py`` (timeit, best of 5 loops of
200 calls, median of 5 rounds) on the development VM, in microseconds a
value, ujson's parse included (its share in brackets): the fixture, 41
value lists of collectd 5.12's cpu, memory, load and interface plugins,
nearly each its own tag set, 2.3 (0.6); 100 ``load`` value lists of three
gauges, each its own time, 1.7 (0.3); 100 ``cpu`` value lists of one
derive, 2.3 (0.85).  A rejected value list costs an exception and its reason.
"""

from __future__ import annotations

from typing import Any

import ujson

from ingest.errors import IngestError
from ingest.sample import (
    MAX_TAG_VALUE,
    Converted,
    check_name,
    check_tags,
    check_value,
    invalid,
    seconds_to_ns,
)

MAX_ERRORS = 100
"""How many rejected value lists `Converted.errors` lists; the others are only counted."""


def decode(body: bytes, now_ns: int) -> Converted:
    """The samples of one ``write_http`` JSON body; `now_ns` stands in for a missing or zero time.

    Raises `IngestError` (400) when the body is not JSON or not an array of objects; every other
    fault is a rejected value list, reported in the result.
    """
    try:
        document = ujson.loads(body)
    except ValueError as exc:
        raise IngestError(400, "malformed JSON", str(exc)) from None
    if type(document) is not list:
        raise _not_value_lists()
    encoder = _Encoder(now_ns)
    lines: list[str] = []
    errors: list[tuple[int, str]] = []
    rejected = 0
    add = encoder.add
    for index, value_list in enumerate(document):
        if type(value_list) is not dict:
            raise _not_value_lists()
        mark = len(lines)
        try:
            add(value_list, lines)
        except IngestError as error:
            del lines[mark:]
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((index, error.detail))
    return Converted(lines, rejected, errors, encoder.skipped())


def _not_value_lists() -> IngestError:
    return IngestError(400, "invalid body", "expected a JSON array of collectd value lists")


class _Encoder:
    """The storage lines of one body's value lists, remembering the parts the body repeats.

    `_heads` maps a sample name to the start of its line (``{"name":"cpu.cpu","value":``), checked
    once; `_tags` maps ``(host, plugin_instance, type_instance)`` to the tags' JSON, checked once;
    `_times` maps each float ``time`` to its nanoseconds' text (`seconds_to_ns` costs 1 us).
    """

    __slots__ = ("_heads", "_now_text", "_tags", "_times", "infinity", "nan", "notification")

    def __init__(self, now_ns: int) -> None:
        self._now_text = str(now_ns)
        self._heads: dict[str, str] = {}
        self._tags: dict[tuple[str, str, str], str] = {}
        self._times: dict[float, str] = {}
        self.nan = 0
        self.infinity = 0
        self.notification = 0

    def add(self, value_list: dict[str, Any], lines: list[str]) -> None:
        """Append the lines of one value list to `lines`.

        Raises `IngestError` (400 ``invalid sample``) for a value list that breaks a rule, possibly
        after appending some of its lines: the caller cuts `lines` back.  The skipped counts change
        only once nothing can raise.
        """
        values = value_list.get("values")
        dsnames = value_list.get("dsnames")
        if type(values) is not list or type(dsnames) is not list or len(values) != len(dsnames) or not values:
            if "labels" in value_list and "values" not in value_list:
                self.notification += 1
                return
            raise invalid(_shape_fault(values, dsnames))
        host = value_list.get("host")
        plugin = value_list.get("plugin")
        type_ = value_list.get("type")
        plugin_instance = value_list.get("plugin_instance", "")
        type_instance = value_list.get("type_instance", "")
        if (
            type(host) is not str
            or type(plugin) is not str
            or type(type_) is not str
            or type(plugin_instance) is not str
            or type(type_instance) is not str
            or not plugin
            or not type_
        ):
            raise invalid(_identity_fault(host, plugin, type_, plugin_instance, type_instance))
        key = (host, plugin_instance, type_instance)
        tags_text = self._tags.get(key)
        if tags_text is None:
            tags_text = self._tags[key] = _tags_text(host, plugin_instance, type_instance)
        seconds = value_list.get("time")
        time_text = self._times.get(seconds) if type(seconds) is float else None
        if time_text is None:
            time_text = self._timestamp_text(seconds)
        tail = f',"timestamp":{time_text},"tags":{tags_text}}}'
        prefix = f"{plugin}.{type_}"
        heads = self._heads
        dumps = ujson.dumps
        nan = infinity = 0
        for dsname, value in zip(dsnames, values, strict=True):
            if type(dsname) is not str or not dsname:
                raise invalid("dsnames: must be non-empty strings")
            name = prefix if dsname == "value" else f"{prefix}.{dsname}"
            head = heads.get(name)
            if head is None:
                check_name(name)
                head = heads[name] = f'{{"name":{dumps(name)},"value":'
            kind = type(value)
            if kind is float:
                if value - value != 0.0:  # NaN or an infinity
                    if value != value:
                        nan += 1
                    else:
                        infinity += 1
                    continue
                lines.append(head + dumps(value) + tail)
            elif kind is int:
                check_value(value)  # the 64-bit range
                lines.append(head + str(value) + tail)
            elif value is None:
                nan += 1
            else:
                raise invalid("values: must be numbers or null")
        self.nan += nan
        self.infinity += infinity

    def _timestamp_text(self, seconds: Any) -> str:
        """The nanoseconds of a value list's ``time`` as text; 0, null or absent is the time of receipt."""
        if seconds is None or (type(seconds) in (int, float) and seconds == 0):
            return self._now_text
        try:
            text = str(seconds_to_ns(seconds))
        except IngestError as error:
            raise invalid("time" + error.detail[error.detail.index(":") :]) from None
        if type(seconds) is float:
            self._times[seconds] = text
        return text

    def skipped(self) -> dict[str, int]:
        counts = {"nan": self.nan, "infinity": self.infinity, "notification": self.notification}
        return {reason: count for reason, count in counts.items() if count}


def _tags_text(host: str, plugin_instance: str, type_instance: str) -> str:
    """The tags' JSON for one identity, the empty parts left out; raises as `check_tags` does."""
    tags: dict[str, str] = {}
    if host:
        tags["host"] = host
    if plugin_instance:
        tags["plugin_instance"] = plugin_instance
    if type_instance:
        tags["type_instance"] = type_instance
    # What check_tags refuses is a value too long or not printable: the usual tags pass two C calls.
    if (
        max(len(host), len(plugin_instance), len(type_instance)) > MAX_TAG_VALUE
        or not (host + plugin_instance + type_instance).isprintable()
    ):
        check_tags(tags)
    return ujson.dumps(tags)


def _shape_fault(values: Any, dsnames: Any) -> str:
    if type(values) is not list:
        return "values: must be an array"
    if type(dsnames) is not list:
        return "dsnames: must be an array"
    if len(values) != len(dsnames):
        return f"dsnames: {len(dsnames)} names for {len(values)} values"
    return "values: empty"


def _identity_fault(host: Any, plugin: Any, type_: Any, plugin_instance: Any, type_instance: Any) -> str:
    if type(host) is not str:
        return "host: must be a string"
    if type(plugin) is not str or not plugin:
        return "plugin: must be a non-empty string"
    if type(type_) is not str or not type_:
        return "type: must be a non-empty string"
    if type(plugin_instance) is not str:
        return "plugin_instance: must be a string"
    return "type_instance: must be a string"
