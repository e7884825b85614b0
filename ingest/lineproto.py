"""InfluxDB line protocol to samples.  Pure: no Twisted, no clock; the caller passes the time of receipt.

Owns the grammar of ``POST /write`` and ``POST /api/v2/write`` bodies, the mapping of its points to
samples, and the time units of the ``precision`` query parameter (`PRECISIONS`).  `bodies` calls
`parse` in the parse pool and turns the `Parsed` into a response and storage bytes.

Grammar, after the InfluxDB v2 line protocol reference, one point per line::

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]

Where the reference is loose or silent, this reads a body as InfluxDB 2.x's own parser
(``models.ParsePointsWithPrecision``) does, since it is what every client was tested against:
``tests/test_lineproto_corpus.py`` holds it to all 6,344 counted cases of InfluxData's corpus.

- Lines end at ``\\n``, but for a newline inside a string value or right after a backslash (InfluxDB's
  line scanner, `_line_end`): a line that opens a string and never closes it runs to the end of the
  body.  One ``\\r`` before the newline is dropped (CRLF).  Leading and trailing spaces and tabs are
  ignored; a line that is then empty, or starts with ``#`` (a comment), is skipped.  Line numbers count
  every physical line, skipped ones included, from 1; a line is numbered by its first.
- One or more spaces separate the three sections; only spaces do (a tab is a plain character).
- Backslashes, InfluxDB's two rules.  In the head (measurement and tags) a comma, a space, and but in
  a measurement an equals sign, right after a backslash is escaped, whatever comes before that
  backslash (``two\\\\ words`` is ``two\\ words``); every other backslash is kept as written.  In the
  fields and the timestamp a backslash pairs with the character after it, left to right; a field key
  then loses the backslash of ``\\,``, ``\\=``, ``\\ `` and ``\\"`` (``\\\\`` stays two), and a key that
  ends in a backslash is rejected (InfluxDB's field reader runs such a key into its value).  A line
  ending in an unpaired backslash is rejected.  Quotes in names are plain characters.
- Field values: float (``1``, ``-1.5``, ``.5``, ``1.``, ``1e-3``, ``-1.2E+78``; no ``+`` sign, no
  ``nan``/``inf``), integer with ``i`` (int64), unsigned with ``u`` (uint64, no sign), boolean (``t``
  ``T`` ``true`` ``True`` ``TRUE`` and ``f`` ``F`` ``false`` ``False`` ``FALSE``), and string: double
  quoted, where a backslash escapes the next character (``\\"``, ``\\\\``), so commas, spaces, equals
  signs and newlines need no escape.
- The timestamp is an optional integer, negative before 1970, in the request's unit, ``unit_ns``
  nanoseconds each, within InfluxDB's range (`ingest.sample.MIN_NS`..`MAX_NS`); absent means ``now_ns``.

Decisions of ours (PRODUCT.md: do what a user of InfluxDB would expect; the corpus marks these cases
disputed):

- A CR before a newline is dropped (InfluxDB keeps it in the line).  Control characters and invalid
  UTF-8 in names and tags reject the line (InfluxDB stores them).
- An empty tag value rejects the line (the reference: "omit the tag"; VictoriaMetrics drops the tag).
  A tag key given twice rejects the line: a sample holds one value per key.  A field key given twice
  gives two samples, in order (storage keeps both; InfluxDB keeps the last).

Mapping, as VictoriaMetrics does it: each numeric or boolean field is one sample named
``measurement_field``, or ``measurement`` for a field named ``value``; booleans are 1 and 0, ``i`` and
``u`` values ints, floats floats.  String fields are not samples: they are counted in
`Parsed.skipped`.  Tags are the sample's tags.  Every sample passes the JSON sample's rules
(`ingest.sample`: name length and characters, value range, timestamp range, tag count and
lengths).  Samples share tags dicts (all of a line's, and those of lines with the same head): treat
them as read-only.

A line that breaks the grammar or a rule is rejected whole with a reason, and the other lines are
kept: PRODUCT.md's partial write.  `parse` raises nothing for any input; reasons are data
(`Parsed.errors`).

Cost: the body is decoded once and split once.  A line with no backslash and no double quote (nearly
all of them) is cut by C-level `str.partition`/`split`.  A line with backslashes first has each escape
pair replaced by a stand-in character that no decoded text holds (a lone surrogate), in at most seven
C-level `str.replace` calls and one regular expression search for the end of the head, and is then
cut the same way, each piece translated back.  A body with a double quote, or a backslash before a
newline, is cut into lines by `_logical_lines`: `str.find` for a line without a quote, one regular
expression step per separator for a line with one.  Only a field set with a string in it is scanned
by a regular expression, one match per field, possessive (no backtracking); every step is linear in
the line's length.  What Telegraf repeats through a batch is checked once: the
measurement and tags of each distinct head (``cpu,host=a``) and each sample name once per body, a
timestamp text once while consecutive lines share it.  On the development VM (a slow one:
``float("0.5")`` takes 123 ns), 100 lines ``cpu,host=a,region=eu usage_user=0.5,usage_system=0.25,
usage_idle=99.25 1700000000000000000`` parse in 1.0 ms (300k samples/s); with 100 distinct hosts and
timestamps, 1.8 ms (170k samples/s); ujson and `sample.from_json` take 2.0 ms for the same 300 samples.
A rejected line costs about 3.5 us, an exception and its reason.

The decimal path.  In a body without backslashes and double quotes, valid UTF-8 (nearly every
Telegraf body), a line whose fields are all decimals (``usage_user=12.5,usage_idle=84.25``: digits,
points and minus signs, Telegraf's floats) is read by a few C-level calls and no Python loop over its
fields: the line cut at its two spaces, the field set at every ``,`` and ``=``, and rebuilt with the
``%`` template of its measurement's last field keys (`_Shape`), which proves the keys and the
separators; one ``bytes.translate`` proves the values' characters.  Heads are checked once a body
(`_plain_head`, `dict` over the ``key=value`` pairs), timestamps while consecutive lines share them.
The values of a run of such lines are read by one `map(float)` and written by one `ujson.dumps` of
them all, and each storage line is one `str.join` of its name's start, its value and its line's tail.
Whatever it does not take (integers, booleans, strings, exponents, blank space, comments, anything
invalid) it leaves, untouched, to the general path, after writing its run, so lines keep their order.
A value that `float` refuses (``1-2``, ``.``) sends the whole body to the general path again: only
it says why.  Measured by callgrind (``bench/micro_lineproto.py --callgrind``), a body of 100 lines
of three float fields, three tags and a timestamp takes 1.6x fewer instructions than the general path
alone (20 distinct heads, a timestamp each ten lines) and 1.64x with 100 heads and 100 timestamps.
``inline=False`` turns it off with the inline path; a property test holds the paths to one output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from itertools import repeat
from typing import NamedTuple

import ujson

from ingest.errors import IngestError
from ingest.sample import Sample, check_name, check_tags, check_timestamp

MAX_ERRORS = 100
"""How many rejected lines `Parsed.errors` lists; the others are only counted."""

PRECISIONS: dict[str, int] = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
"""Nanoseconds per unit of each ``precision`` name (v2 takes ns, us, ms, s; v1 also n, u, m, h)."""


class Parsed(NamedTuple):
    """The outcome of one body.

    `lines` are the accepted samples in storage form (`ingest.sample`: one JSON object, no newline),
    in input order: the parser writes them directly, each head's tags and each field's name encoded
    once a body.  `skipped` counts the string fields of accepted lines; `rejected` counts malformed or
    invalid lines (once each, whatever their number of fields); `errors` lists the first `MAX_ERRORS`
    of them as ``(line number from 1, reason)``.
    """

    lines: list[str]
    skipped: int
    rejected: int
    errors: list[tuple[int, str]]

    @property
    def samples(self) -> list[Sample]:
        """The samples as stored, read back from `lines` (for tests and tools; the service stores `lines`)."""
        return [Sample(**ujson.loads(line)) for line in self.lines]


Fields = list[tuple[str, str]]
"""(field key, value text): a string keeps its quotes; escape pairs in a value keep their stand-ins."""

_BOOLEANS = {
    "t": 1,
    "T": 1,
    "true": 1,
    "True": 1,
    "TRUE": 1,
    "f": 0,
    "F": 0,
    "false": 0,
    "False": 0,
    "FALSE": 0,
}
_FLOAT_FIRST = "-.0123456789"
_FLOAT_LAST = "0123456789."
_DECIMAL = b"0123456789.-"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1
# Possessive quantifiers (Python 3.11) never backtrack, whatever the input.
_INTEGER = re.compile(r"-?+[0-9]++")
_UNSIGNED = re.compile(r"[0-9]++")
# One field of a field set that holds a string: key, '=', then a string, a bare value, or nothing.
_FIELD = re.compile(r'([^,= ]*+)(=?+)("(?:[^"\\]++|\\.)*+"|[^", ][^, ]*+|)', re.DOTALL)

# Stand-ins for the escape pairs: lone surrogates, which no decoded line holds (`parse` rejects the
# lines where surrogateescape put some).
_BACKSLASH = "\ud800"
_COMMA = "\ud801"
_EQUALS = "\ud802"
_SPACE = "\ud803"
_AS_MEASUREMENT = str.maketrans({_COMMA: ",", _EQUALS: "\\=", _SPACE: " "})
_AS_TAG = str.maketrans({_COMMA: ",", _EQUALS: "=", _SPACE: " "})
_AS_WRITTEN = str.maketrans({_BACKSLASH: "\\\\", _COMMA: "\\,", _EQUALS: "\\=", _SPACE: "\\ "})
# The head ends at the first space without a backslash right before it.
_HEAD_END = re.compile(r"(?<!\\) ")
# What InfluxDB's line scanner looks at: a backslash pair, a separator, a quote or a newline.
_SCANNED = re.compile(r'\\.|[ =,"\n]', re.DOTALL)
_FIELD_KEY_ESCAPE = re.compile(r'\\([,"= ])')


def parse(body: bytes, unit_ns: int, now_ns: int, inline: bool = True) -> Parsed:
    """Every point of `body` as samples; timestamps count `unit_ns` ns each, absent ones are `now_ns`.

    Never raises for any `body`: each malformed or invalid line is counted and, up to `MAX_ERRORS`,
    listed with its 1-based line number.

    A plain line of decimal fields goes down the decimal path (the module's docstring), and in other
    bodies the common point, one plain float field (``cpu,host=a usage=0.5 1700000000``), is read
    inline, without the three calls of the general path: 6.4 against 4.7 us a point (timeit, 100-point
    body).  Whatever they do not take, they leave to the general path untouched.  ``inline=False``
    turns both off; property tests hold the paths to the same output for any body.
    """
    lines: list[str] = []
    errors: list[tuple[int, str]] = []
    skipped = 0
    rejected = 0
    # What this body has checked already.  Telegraf repeats heads, timestamps and names in a batch.
    # A head's measurement, its checked tags as JSON, and its fields' sample names as JSON by key.
    heads: dict[str, tuple[str, str, dict[str, str]]] = {}
    last_stamp: str | None = None
    last_ns = str(now_ns)
    try:
        text = body.decode("utf-8")
        unchecked = False
    except UnicodeDecodeError:
        # Each invalid byte becomes a lone surrogate (U+DC80..U+DCFF), which no valid text holds: the
        # lines that carry one are rejected below, and the others parse as usual.
        text = body.decode("utf-8", "surrogateescape")
        unchecked = True
    plain = "\\" not in text and '"' not in text
    if plain or ('"' not in text and "\\\n" not in text):
        numbered: Iterable[tuple[int, str]] = enumerate(text.split("\n"), 1)
    else:
        numbered = _logical_lines(text)
    # The decimal path's state: each head's measurement and tags in JSON with the closing brace, the
    # shape of each measurement's last field set, its own last timestamp and that part of a storage
    # line, and the samples read but not yet written, as parallel lists (`_write` writes them, in order,
    # before the general path writes a line and at the end).
    decimal = plain and inline and not unchecked
    decimal_heads: dict[str, tuple[str, str] | None] = {}
    shapes: dict[str, _Shape] = {}
    decimal_stamp: str | None = None
    stamp_part = ""
    prefixes: list[str] = []
    texts: list[str] = []
    tails: list[str] = []
    for number, line in numbered:
        if not line:
            continue
        if decimal:
            # The line as it comes: one with blank space at either end, or a comment, has a head
            # (`_plain_head`), a field set (`_Shape.kept`) or a timestamp that the path declines.
            head, _, rest = line.partition(" ")
            section, _, stamp = rest.partition(" ")
            about = decimal_heads.get(head)
            if about is None:
                about = decimal_heads[head] = _plain_head(head)
            if about is not None:
                pieces = section.replace("=", ",").split(",")  # keys and values
                values = pieces[1::2]
                template, starts, size, kept = shapes.get(about[0]) or _NO_SHAPE
                if len(values) != size or template % tuple(values) != section:
                    template, starts, size, kept = shapes[about[0]] = _shape(about[0], pieces[::2])
                    if len(values) != size or template % tuple(values) != section:
                        size = 0
                if (
                    size
                    and len(section) < 300  # no value reaches 1e300: all are finite
                    and len(section.encode().translate(None, _DECIMAL)) == kept
                ):
                    if stamp != decimal_stamp:
                        part = _stamp_part(stamp, unit_ns, now_ns)
                        if part is not None:
                            decimal_stamp, stamp_part = stamp, part
                    if stamp == decimal_stamp:
                        prefixes += starts
                        texts += values
                        tails += [stamp_part + about[1]] * size
                        continue
            if texts:
                try:
                    _write(lines, prefixes, texts, tails)
                except ValueError:
                    return parse(body, unit_ns, now_ns, inline=False)
        if line[-1] == "\r":
            line = line[:-1]
        line = line.strip(" \t")
        if not line or line[0] == "#":
            continue
        try:
            if unchecked and not line.isascii():
                _check_utf8(line)
            escaped = not plain and "\\" in line
            if escaped:
                head, rest = _protect(line)
            else:
                head, _, rest = line.partition(" ")
            known = heads.get(head)
            if known is None:
                measurement, tags = _head(head, escaped)
                known = heads[head] = (measurement, ujson.dumps(tags), {})
            value = None
            if plain or '"' not in rest:
                section, _, stamp = rest.partition(" ")
                key, _, text = section.partition("=")
                if (
                    inline
                    and not escaped
                    and key
                    and text
                    and "," not in section
                    and rest[0] != " "
                    and stamp[:1] != " "
                    and text[-1] in _FLOAT_LAST  # the float test of `_number`
                    and text[0] in _FLOAT_FIRST
                    and "_" not in text
                    and text.isascii()
                ):
                    try:
                        number_value = float(text)
                    except ValueError:
                        pass
                    else:
                        if number_value - number_value == 0.0:
                            value = ujson.dumps(number_value)
                if value is None:
                    fields, stamp = _fields(rest, escaped)
            else:
                fields, stamp = _quoted_fields(rest, escaped)
            if stamp != last_stamp:
                timestamp = _timestamp(stamp, unit_ns) if stamp else now_ns
                check_timestamp(timestamp)
                last_stamp, last_ns = stamp, str(timestamp)
            if value is None:
                skipped += _samples(known[0], known[1], known[2], fields, last_ns, lines)
            else:
                names = known[2]
                name = names.get(key) or _name(known[0], key, names)
                lines.append(f'{{"name":{name},"value":{value},"timestamp":{last_ns},"tags":{known[1]}}}')
        except IngestError as error:
            rejected += 1
            if len(errors) < MAX_ERRORS:
                errors.append((number, error.detail))
    if texts:
        try:
            _write(lines, prefixes, texts, tails)
        except ValueError:
            return parse(body, unit_ns, now_ns, inline=False)
    return Parsed(lines, skipped, rejected, errors)


def _stamp_part(stamp: str, unit_ns: int, now_ns: int) -> str | None:
    """The timestamp's part of a storage line and the key after it, ``,"timestamp":1700000000,"tags":``;
    None for a timestamp that the general path must judge."""
    if stamp[:1] == " ":
        return None
    try:
        timestamp = _timestamp(stamp, unit_ns) if stamp else now_ns
        check_timestamp(timestamp)
    except IngestError:
        return None
    return f',"timestamp":{timestamp},"tags":'


def _plain_head(head: str) -> tuple[str, str] | None:
    """The measurement of a head without backslashes and its tags in JSON with the closing brace of a
    storage line; None when the general path must judge it (`_head`).

    `_head`'s rules by C-level calls: `dict` takes only pairs of one ``=`` each, and a head of at
    most 256 printable characters has no control characters and no key, value or count past
    `ingest.sample`'s bounds.  About half `_head`'s cost and its `ujson.dumps`.
    """
    measurement, comma, rest = head.partition(",")
    if not measurement or measurement[0] == "#" or len(head) > 256 or not head.isprintable():
        return None
    if not comma:
        return measurement, "{}}"
    pairs = rest.split(",")
    try:
        tags = dict(map(str.split, pairs, repeat("=")))
    except ValueError:
        return None
    if len(tags) != len(pairs) or "" in tags or not all(tags.values()):
        return None
    if "/" in rest or not rest.isascii():  # what ujson escapes (a plain head has no quote or backslash)
        return measurement, ujson.dumps(tags) + "}"
    return measurement, '{"' + rest.replace("=", '":"').replace(",", '","') + '"}}'


class _Shape(NamedTuple):
    """What the decimal path knows of a measurement and the field keys it last came with.

    `template` is the field set with ``%s`` for each value (``usage_user=%s,usage_idle=%s``): a field
    set that it rebuilds from its values (split at each ``,`` and ``=``) has those keys in that order.
    `prefixes` are the storage lines' starts, one a field (``{"name":"cpu_usage_user","value":``);
    `size` how many (0 for `_NO_SHAPE`: keys that the general path must judge).  `kept` is how many
    bytes of the field set's UTF-8 are not digits, points or minus signs: a field set of this shape
    with no more has values made of those alone.
    """

    template: str
    prefixes: list[str]
    size: int
    kept: int


_NO_SHAPE = _Shape("", [], 0, 0)


def _shape(measurement: str, keys: list[str]) -> _Shape:
    """The `_Shape` of a measurement's field keys, their sample names checked; `_NO_SHAPE` when one is
    not a valid key or its name not a valid sample name."""
    prefixes = []
    for key in keys:
        if not key:
            return _NO_SHAPE
        name = measurement if key == "value" else measurement + "_" + key
        try:
            check_name(name)
        except IngestError:
            return _NO_SHAPE
        prefixes.append('{"name":' + ujson.dumps(name) + ',"value":')
    template = ",".join(key.replace("%", "%%") + "=%s" for key in keys)
    kept = len("=,".join(keys).encode().translate(None, _DECIMAL)) + 1  # and the last "="
    return _Shape(template, prefixes, len(keys), kept)


def _write(lines: list[str], prefixes: list[str], texts: list[str], tails: list[str]) -> None:
    """Append the decimal path's pending samples to `lines` and forget them: one C-level `float` loop and
    one ujson call for all their values.  Raises `ValueError` for a value that is not a decimal
    (``1-2``, ``.``), which only the general path rejects as it should."""
    values = ujson.dumps(list(map(float, texts)))[1:-1].split(",")
    lines += map("".join, zip(prefixes, values, tails, strict=True))
    prefixes.clear()
    texts.clear()
    tails.clear()


def _malformed(reason: str) -> IngestError:
    """The rejection of one line; `parse` catches it and lists its detail."""
    return IngestError(400, "malformed line", reason)


def _written(text: str) -> str:
    """The start of a value or timestamp for a reason, with its escape pairs as the client wrote them."""
    return text.translate(_AS_WRITTEN)[:64]


def _check_utf8(line: str) -> None:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed("invalid UTF-8") from None


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of `text` as InfluxDB's scanner cuts them, each with the number of its first line.

    A newline inside a string field value, or right after a backslash, does not end the line (InfluxDB's
    ``scanLine``).  A line without a double quote that does not end in a backslash ends at its newline,
    as in `str.split`; the others are scanned by `_line_end`.
    """
    size = len(text)
    start = 0
    number = 1
    while start <= size:
        end = text.find("\n", start)
        if end < 0:
            end = size
        if text.find('"', start, end) >= 0:
            end = _quoted_line_end(text, start)
        elif text[end - 1 : end] == "\\":
            end = _line_end(text, start)
        yield number, text[start:end]
        number += text.count("\n", start, end) + 1
        start = end + 1


def _quoted_line_end(text: str, start: int) -> int:
    """`_line_end` by C-level finds and counts, for a line that holds no backslash (nearly all): 1.2 us
    against 4.2 for a line of four fields, one a string (timeit).  A line with one goes to `_line_end`."""
    size = len(text)
    end = text.find("\n", start)
    if end < 0:
        end = size
    position = text.find(" ", start, end)
    if position >= 0:
        equals = commas = 0
        while True:
            quote = text.find('"', position, end)
            if quote < 0:
                break
            equals += text.count("=", position, quote)
            commas += text.count(",", position, quote)
            position = quote + 1
            if equals > commas:  # a string opens: the line runs on to its closing quote
                close = text.find('"', position)
                if close < 0:
                    end = size
                    break
                position = close + 1
                if close > end:
                    end = text.find("\n", position)
                    if end < 0:
                        end = size
    if text.find("\\", start, end) >= 0:
        return _line_end(text, start)
    return end


def _line_end(text: str, start: int) -> int:
    """Where the line that begins at `start` ends: its newline's index, or the end of `text`.

    InfluxDB's ``scanLine``: a backslash and the character after it are skipped together; after the
    first space, a double quote opens or closes a string when the line has seen more ``=`` than ``,``
    outside strings; a newline in a string does not end the line.  Linear: one regular expression
    step a backslash pair or a character among ``\\ =,"`` and newline.
    """
    fields = quoted = False
    equals = commas = 0
    for match in _SCANNED.finditer(text, start):
        char = match[0]
        if char == "\n":
            if not quoted:
                return match.start()
        elif quoted:
            quoted = char != '"'
        elif char == " ":
            fields = True
        elif not fields or len(char) == 2:
            continue
        elif char == "=":
            equals += 1
        elif char == ",":
            commas += 1
        elif equals > commas:  # a double quote
            quoted = True
    return len(text)


def _protect(line: str) -> tuple[str, str]:
    """The head and the rest of a line with backslashes, their escape pairs replaced by stand-ins.

    The two follow InfluxDB's two rules.  In the head (measurement and tags), a comma, equals sign or
    space right after a backslash is escaped, whatever comes before that backslash: ``\\\\ `` is a
    backslash and an escaped space, and the head ends at the first space without a backslash before
    it.  In the rest, a backslash pairs with the character after it, left to right, as a scan would:
    replacing ``\\\\`` first makes a run of backslashes lose its pairs, and an odd one keeps its last,
    now next to the character it escapes.
    """
    end = _HEAD_END.search(line)
    if end is None:
        head, rest = line, ""
    else:
        head, rest = line[: end.start()], line[end.end() :]
    head = head.replace("\\,", _COMMA).replace("\\=", _EQUALS).replace("\\ ", _SPACE)
    if "\\" in rest:
        rest = rest.replace("\\\\", _BACKSLASH).replace("\\,", _COMMA).replace("\\=", _EQUALS)
        rest = rest.replace("\\ ", _SPACE)
        if rest[-1] == "\\":
            raise _malformed("backslash at end of line")
    return head, rest


def _field_key(key: str) -> str:
    """A field key of a line with backslashes, as InfluxDB unescapes it: ``\\,``, ``\\=``, ``\\ `` and
    ``\\"`` lose their backslash, scanning left to right without pairing (``\\\\`` stays two).

    A key that ends in a backslash is refused: InfluxDB's field reader takes the ``=`` after it as
    escaped and reads the key on into the value (``a\\\\=1,b=2`` is one field ``a\\=1,b``), or refuses
    the line when no ``=`` follows.
    """
    if key[-1] == _BACKSLASH:
        raise _malformed(f"field {_written(key)!r}: key ends in a backslash")
    return _FIELD_KEY_ESCAPE.sub(r"\1", key.translate(_AS_WRITTEN))


def _head(head: str, escaped: bool) -> tuple[str, dict[str, str]]:
    """The measurement and the checked tags of ``measurement[,key=value...]``."""
    measurement, *pairs = head.split(",")
    if not measurement:
        raise _malformed("missing measurement")
    if escaped and not measurement.isascii():
        measurement = measurement.translate(_AS_MEASUREMENT)
    tags: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if escaped and not key.isascii():
            key = key.translate(_AS_TAG)
        if not key:
            raise _malformed("empty tag key")
        if not equals:
            raise _malformed(f"tag {key[:64]!r}: missing '='")
        if "=" in value:
            raise _malformed(f"tag {key[:64]!r}: unescaped '=' in value")
        if not value:
            raise _malformed(f"tag {key[:64]!r}: empty value")
        if key in tags:
            raise _malformed(f"duplicate tag {key[:64]!r}")
        tags[key] = value.translate(_AS_TAG) if escaped and not value.isascii() else value
    if tags:
        check_tags(tags)
    return measurement, tags


def _fields(rest: str, escaped: bool) -> tuple[Fields, str]:
    """The fields and the timestamp text of what follows the head, when it holds no string."""
    if not rest:
        raise _malformed("missing fields")
    if rest[0] == " ":
        rest = rest.lstrip(" ")
    section, _, stamp = rest.partition(" ")
    if stamp and stamp[0] == " ":
        stamp = stamp.lstrip(" ")
    fields: Fields = []
    for pair in section.split(","):
        key, equals, value = pair.partition("=")
        if escaped and (not key.isascii() or "\\" in key):
            key = _field_key(key)
        if not key:
            raise _malformed("empty field key")
        if not equals:
            raise _malformed(f"field {key[:64]!r}: missing '='")
        if not value:
            raise _malformed(f"field {key[:64]!r}: missing value")
        fields.append((key, value))
    return fields, stamp


def _quoted_fields(rest: str, escaped: bool) -> tuple[Fields, str]:
    """`_fields` for a field set with a string in it: commas and spaces in strings do not separate."""
    rest = rest.lstrip(" ")
    size = len(rest)
    fields: Fields = []
    start = 0
    while True:
        match = _FIELD.match(rest, start)
        assert match is not None  # every part of the pattern may be empty
        key, equals, value = match.groups()
        end = match.end()
        if escaped and (not key.isascii() or "\\" in key):
            key = _field_key(key)
        if not key:
            raise _malformed("empty field key")
        if not equals:
            raise _malformed(f"field {key[:64]!r}: missing '='")
        if not value:
            if end < size and rest[end] == '"':
                raise _malformed(f"field {key[:64]!r}: unterminated string")
            raise _malformed(f"field {key[:64]!r}: missing value")
        fields.append((key, value))
        if end == size:
            return fields, ""
        after = rest[end]
        if after == " ":
            stamp = rest[end + 1 :].lstrip(" ")
            return fields, stamp
        if after != ",":
            raise _malformed(f"field {key[:64]!r}: unexpected {after!r} after the string")
        start = end + 1


def _timestamp(stamp: str, unit_ns: int) -> int:
    """Nanoseconds of a timestamp text; 2**64 when it has too many digits to read (out of range anyway)."""
    digits = stamp[1:] if stamp[0] == "-" else stamp
    if not (digits.isdigit() and digits.isascii()):
        text, _, extra = stamp.partition(" ")
        if extra:
            _timestamp(text, unit_ns)
            raise _malformed(f"unexpected text after the timestamp: {_written(extra)!r}")
        raise _malformed(f"bad timestamp {_written(text)!r}")
    try:
        return int(stamp) * unit_ns
    except ValueError:
        # More digits than int() reads (sys.get_int_max_str_digits).
        return 2**64


def _samples(
    measurement: str,
    tags: str,
    names: dict[str, str],
    fields: Fields,
    timestamp: str,
    out: list[str],
) -> int:
    """Append the line's samples to `out`, in storage form, once all are valid; return how many string
    fields it had.

    `tags` and `timestamp` are in JSON already; `names` maps the field keys of this head seen already
    to their checked sample names in JSON; new ones are checked and added.  A line is kept whole or not
    at all: its samples gather in a list first, but for the common line of one field.
    """
    if len(fields) == 1:
        key, text = fields[0]
        value = _number(key, text)
        if value is None:
            return 1
        name = names.get(key) or _name(measurement, key, names)
        out.append(f'{{"name":{name},"value":{value},"timestamp":{timestamp},"tags":{tags}}}')
        return 0
    samples: list[str] = []
    strings = 0
    for key, text in fields:
        value = _number(key, text)
        if value is None:
            strings += 1
            continue
        name = names.get(key) or _name(measurement, key, names)
        samples.append(f'{{"name":{name},"value":{value},"timestamp":{timestamp},"tags":{tags}}}')
    out += samples
    return strings


def _number(key: str, text: str) -> str | None:
    """A field's value as a sample value in JSON (a finite float, int64, uint64, boolean 1 or 0, as
    `ingest.sample` stores them); None for a string."""
    # A float starts with a sign, a digit or a point and ends with a digit or a point; float() reads
    # the rest of the decimal grammar.  Its own extras (underscores, non-ASCII digits, white space,
    # nan, inf) fail these tests; an exponent past the range gives an infinity, refused below.
    if text[-1] in _FLOAT_LAST and text[0] in _FLOAT_FIRST and "_" not in text and text.isascii():
        try:
            value = float(text)
        except ValueError:
            raise _malformed(f"field {key[:64]!r}: bad value {_written(text)!r}") from None
        if value - value != 0.0:
            raise _malformed(f"field {key[:64]!r}: value: must be a finite number")
        return ujson.dumps(value)
    number = _value(key, text)  # integers are range-checked there
    return None if number is None else str(number)


def _name(measurement: str, key: str, names: dict[str, str]) -> str:
    """The sample name of a field, checked, in JSON; remembered in `names` under its key."""
    name = measurement if key == "value" else measurement + "_" + key
    try:
        check_name(name)
    except IngestError as error:
        raise _malformed(f"field {key[:64]!r}: {error.detail}") from None
    text = names[key] = ujson.dumps(name)
    return text


def _value(key: str, text: str) -> int | None:
    """The value of a field that is not a plain float (an integer or a boolean): None for a string."""
    last = text[-1]
    if last == "i":
        digits = text[:-1]
        if _INTEGER.fullmatch(digits) is None:
            raise _malformed(f"field {key[:64]!r}: bad integer {_written(text)!r}")
        number = _read_int(key, digits)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise _malformed(f"field {key[:64]!r}: integer out of int64 range")
        return number
    if last == "u":
        digits = text[:-1]
        if _UNSIGNED.fullmatch(digits) is None:
            raise _malformed(f"field {key[:64]!r}: bad unsigned integer {_written(text)!r}")
        number = _read_int(key, digits)
        if number > _UINT64_MAX:
            raise _malformed(f"field {key[:64]!r}: unsigned integer out of uint64 range")
        return number
    if text[0] == '"':
        return None
    boolean = _BOOLEANS.get(text)
    if boolean is None:
        raise _malformed(f"field {key[:64]!r}: bad value {_written(text)!r}")
    return boolean


def _read_int(key: str, digits: str) -> int:
    try:
        return int(digits)
    except ValueError:
        # More digits than int() reads (sys.get_int_max_str_digits).
        raise _malformed(f"field {key[:64]!r}: integer out of range") from None
