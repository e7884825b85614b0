"""The ``ingest-read`` command: print stored samples as NDJSON.  Blocking; no Twisted.

Owns reading segments back.  `read_samples` is the core: it takes a data
directory or an iterable of segment paths and a `Query`, and yields the
stored samples the query selects; it neither prints nor reads options, and
reports what it skips through a `warn` callback.  `main` is the shell: it
parses the command line, writes the samples to `stdout` and the warnings to
`stderr` (both injectable), and chooses the exit status.

What is read.  Every segment of the data directory, closed or active,
plain (``segment-<ns>.ndjson``) or gzipped by an operator
(``segment-<ns>.ndjson.gz``), of the single process and of every worker
(``segment-<ns>-w<K>.ndjson`` with ``--workers``), in the order of the
start times in their names (`ingest.storage.list_readable_segments`, which
also settles a segment that is there both plain and gzipped), each file
line by line.  Workers write at the same time, so their samples interleave
only as finely as their segments do.  Samples
therefore come out in the order they were stored, not sorted by timestamp:
a client may send old or future timestamps.  For the same reason the time
range cannot skip a segment by the start time in its name: every segment is
read.  A plain segment that disappears between the listing and its reading
has been gzipped in the meantime, and its ``.gz`` is read instead.

Retention (``--retention``, ``--retention-bytes``) deletes the oldest closed
segments while this runs.  A segment already open is read to its end (on
Linux a deleted file lives on until its last descriptor closes); a listed
segment that is gone, plain and gzipped, when its turn comes was deleted
since the listing and is passed over without a warning: its samples are
past the retention limit.  Segment paths given one by one are not listed,
and one that cannot be opened is warned about.

What is skipped, each with a `Skipped` warning, never an exception:

- a last line without its newline: the service is writing it, or crashed
  while writing it.  It is skipped even when it decodes, as the service's
  start-up repair (`ingest.storage.repair_tail`) would cut it;
- a line that does not decode, or that is not a stored sample (an object
  with a string ``name``, a ``value``, an integer ``timestamp`` and an
  object of ``tags``);
- a line longer than `max_line` bytes, read through in pieces, never held
  whole;
- the rest of a file that cannot be opened or read, or whose gzip stream is
  corrupt or cut short (``Skipped.line`` is None).

Output.  Each selected sample is re-encoded compactly by ujson with the keys
in the stored order (``name``, ``value``, ``timestamp``, ``tags``) and the
options `ingest.sample.encode` uses, so a line the service wrote comes out
as it is stored; a key the service never writes is dropped.

Cost: constant memory however large the segments (one line at a time, at
most `max_line` bytes); one JSON decode per stored line and one encode per
printed sample.

The stream (``--from nats://...``).  `stream_lines` reads the NATS JetStream
stream that ``ingest --sink`` fills, through a pull consumer of its own
(or a named durable one), and its lines go through the same selection
(`select_lines`); it stops once it has caught up with the stream.  Each
message holds whole storage lines, exactly as the segment that it came from.

The default data directory, ``./data``, is the service's default
(`ingest.config`): the import rules keep this side tool to `ingest.storage`
and `ingest.sample`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fnmatch
import gzip
import io
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TextIO

import ujson

from ingest.storage import list_readable_segments

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

PROG = "ingest-read"
DEFAULT_DATA_DIR = "./data"
MAX_LINE = 4 << 20
"""Bytes of one line, newline included.  The longest line the service writes is
about 3.9 MB (256 tags of 1,280 characters, each escaped to at most 12 bytes)."""

_NS_PER_S = 1_000_000_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_UNIX_SECONDS = re.compile(r"(?P<sign>-?)(?P<whole>[0-9]*)(?:\.(?P<fraction>[0-9]*))?")
_ISO_FRACTION = re.compile(r"(?P<head>.*?[T ][0-9:]+)[.,](?P<fraction>[0-9]+)(?P<tail>.*)", re.DOTALL)

StoredSample = dict[str, Any]
"""A stored sample as decoded: the keys name, value, timestamp (int ns) and tags, in that order."""


@dataclass(frozen=True)
class Query:
    """Which samples to select; a field left at its default selects every sample.

    `name` is a shell-style glob (`fnmatch`, case-sensitive) on the whole
    name.  `since_ns` is inclusive and `until_ns` exclusive, in nanoseconds
    since the epoch.  Every ``(key, value)`` of `tags` must be among the
    sample's tags.
    """

    name: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    tags: tuple[tuple[str, str], ...] = ()


class Skipped(NamedTuple):
    """What `read_samples` left out: one line, or, when `line` is None, the rest of a file."""

    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"


def _ignore(skipped: Skipped) -> None:
    pass


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an ISO 8601 time or of Unix seconds.

    A bare number is Unix seconds, integer or fraction (``1795845600``,
    ``1795845600.25``, ``-86400`` before 1970), so ``20261128`` is not read
    as a basic ISO date.
    Anything else is ISO 8601 as `datetime.datetime.fromisoformat` reads it
    (``2026-11-28T06:00:00Z``, ``2026-11-28T06:00:00+01:00``,
    ``2026-11-28``); a time without an offset, and a date alone, are UTC.
    Fractions of a second keep every digit to the nanosecond; digits beyond
    it round up, which keeps both bounds exact on integer timestamps
    (``ts >= t`` exactly when ``ts >= ceil(t)``, and ``ts < t`` exactly when
    ``ts < ceil(t)``).

    Raises `ValueError` naming `text` when it is neither.
    """
    text = text.strip()
    unix = _UNIX_SECONDS.fullmatch(text)
    if unix:
        whole, fraction = unix["whole"], unix["fraction"] or ""
        if not (whole or fraction):
            raise ValueError(f"not an ISO 8601 time or Unix seconds: {text!r}")
        if unix["sign"]:  # the ceiling of a negative time drops the digits past the ninth
            return -(int(whole or "0") * _NS_PER_S + int(fraction[:9].ljust(9, "0")))
        return int(whole or "0") * _NS_PER_S + _fraction_ns(fraction)
    fraction = ""
    iso = text
    split = _ISO_FRACTION.fullmatch(text)
    if split:
        iso, fraction = split["head"] + split["tail"], split["fraction"]
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or Unix seconds: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    since_epoch = moment - _EPOCH
    seconds = since_epoch.days * 86_400 + since_epoch.seconds
    return seconds * _NS_PER_S + since_epoch.microseconds * 1_000 + _fraction_ns(fraction)


def _fraction_ns(digits: str) -> int:
    """Nanoseconds of the digits after a decimal point, rounded up past the ninth."""
    ns = int(digits[:9].ljust(9, "0"))
    if digits[9:].strip("0"):
        ns += 1
    return ns


def segment_paths(directory: str) -> list[str]:
    """The segment files of `directory`, oldest first.  Raises `OSError` when it cannot be listed."""
    return [os.path.join(directory, name) for name in list_readable_segments(directory)]


def read_samples(
    source: str | Iterable[str],
    query: Query | None = None,
    warn: Callable[[Skipped], None] = _ignore,
    max_line: int = MAX_LINE,
) -> Iterator[StoredSample]:
    """The stored samples of `source` that `query` selects, in the order they are stored.

    `source` is a data directory (a `str`: listed now, in the order of
    `segment_paths`) or an iterable of segment paths (read in the order
    given; a name ending in ``.gz`` is read through gzip).  Each sample is a
    new dict with exactly the keys name, value, timestamp and tags, in that
    order.  What cannot be read is passed to `warn` and skipped (see the
    module docstring); iteration itself raises nothing for bad data.

    Raises `OSError` at once when a directory cannot be listed.
    """
    listed = isinstance(source, str)
    paths = segment_paths(source) if isinstance(source, str) else source
    return _select(paths, query or Query(), warn, max_line, listed)


def _select(
    paths: Iterable[str], query: Query, warn: Callable[[Skipped], None], max_line: int, listed: bool
) -> Iterator[StoredSample]:
    lines = (line for path in paths for line in _lines(path, warn, max_line, listed))
    return select_lines(lines, query, warn)


def select_lines(
    lines: Iterable[tuple[str, int, bytes]], query: Query, warn: Callable[[Skipped], None] = _ignore
) -> Iterator[StoredSample]:
    """The samples `query` selects among stored lines given as ``(where, line number, line)``."""
    name_matches = None if query.name is None else re.compile(fnmatch.translate(query.name)).match
    since, until, wanted_tags = query.since_ns, query.until_ns, query.tags
    loads = ujson.loads
    for where, number, line in lines:
        try:
            obj = loads(line)
        except ValueError as error:
            warn(Skipped(where, number, f"skipped a line that is not JSON ({error})"))
            continue
        if type(obj) is not dict:
            obj = {}
        name, timestamp, tags = obj.get("name"), obj.get("timestamp"), obj.get("tags")
        if (
            type(name) is not str
            or type(timestamp) is not int
            or type(tags) is not dict
            or "value" not in obj
        ):
            warn(Skipped(where, number, "skipped a line that is not a stored sample"))
            continue
        if name_matches is not None and name_matches(name) is None:
            continue
        if (since is not None and timestamp < since) or (until is not None and timestamp >= until):
            continue
        if wanted_tags and not all(tags.get(key) == value for key, value in wanted_tags):
            continue
        yield {"name": name, "value": obj["value"], "timestamp": timestamp, "tags": tags}


def _lines(
    path: str, warn: Callable[[Skipped], None], max_line: int, listed: bool = False
) -> Iterator[tuple[str, int, bytes]]:
    """``(path read, line number, line)`` for each whole line of the segment at `path`.

    Lines without their newline (a torn tail) and lines over `max_line`
    bytes are passed to `warn` instead; so are open and read errors, which
    end the file.  The path read differs from `path` when a plain segment
    was gzipped since it was listed.  A `listed` segment that no longer
    exists (retention deleted it since the listing) yields nothing, silently.
    """
    try:
        where, stream = _open_segment(path)
    except FileNotFoundError as error:
        if not listed:
            warn(Skipped(path, None, f"skipped: cannot open ({error.strerror or error})"))
        return
    except OSError as error:
        warn(Skipped(path, None, f"skipped: cannot open ({error.strerror or error})"))
        return
    number = 0
    with stream:
        try:
            while True:
                line = stream.readline(max_line)
                if not line:
                    return
                number += 1
                if line.endswith(b"\n"):
                    yield where, number, line
                elif len(line) < max_line:
                    warn(Skipped(where, number, "skipped an incomplete last line (being written, or torn)"))
                    return
                else:
                    while line and not line.endswith(b"\n"):
                        line = stream.readline(max_line)
                    warn(Skipped(where, number, f"skipped a line longer than {max_line} bytes"))
        except (OSError, EOFError, zlib.error) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            rest = f"the rest after line {number}" if number else "it"
            warn(Skipped(where, None, f"skipped {rest}: cannot read ({reason})"))


def stream_lines(
    servers: list[str],
    stream: str,
    subject: str,
    start_seq: int | None = None,
    since_ns: int | None = None,
    durable: str | None = None,
    batch: int = 256,
    wait: float = 1.0,
) -> Iterator[tuple[str, int, bytes]]:
    """``(nats:<stream>:<sequence>, line number, line)`` for each line of `stream`'s messages on `subject`.

    Reads through a pull consumer from `start_seq`, else from the first
    message stored at or after `since_ns`, else from the first message;
    stops once the consumer has nothing pending (what the stream held when
    reading caught up).  With `durable`, the consumer keeps that name and
    each message is acknowledged once its lines are yielded, so the next
    run with the same name goes on from there; without, it is a consumer of
    this run's own, deleted at the end.  Raises `OSError` (``ConnectionError``)
    when NATS cannot be reached, and ``nats.js.errors.NotFoundError`` when the
    stream does not exist.  Blocking: an asyncio loop of its own.
    """
    loop = asyncio.new_event_loop()
    source = _StreamSource(servers, stream, subject, start_seq, since_ns, durable)
    try:
        loop.run_until_complete(source.open())
        while True:
            messages = loop.run_until_complete(source.fetch(batch, wait))
            if messages is None:
                return
            for seq, payload, message in messages:
                where = f"nats:{stream}:{seq}"
                for number, line in enumerate(payload.splitlines(keepends=True), 1):
                    yield where, number, line
                if durable is not None:
                    loop.run_until_complete(message.ack())
    finally:
        try:
            loop.run_until_complete(source.close())
        finally:
            loop.close()


async def _quiet(error: Exception) -> None:
    """nats-py's error callback: the error that matters is raised, and reported once by `main`."""


class _StreamSource:
    """The pull consumer behind `stream_lines`; every method runs on its loop."""

    def __init__(
        self,
        servers: list[str],
        stream: str,
        subject: str,
        start_seq: int | None,
        since_ns: int | None,
        durable: str | None,
    ) -> None:
        self.servers = servers
        self.stream = stream
        self.subject = subject
        self.start_seq = start_seq
        self.since_ns = since_ns
        self.durable = durable
        self.name = durable or f"ingest-read-{os.getpid()}-{os.urandom(4).hex()}"
        self.nc: Any = None
        self.subscription: Any = None

    async def open(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        try:
            # Each server tried twice, 0.2 s apart (nats-py's defaults retry for two minutes).
            self.nc = await nats.connect(
                servers=self.servers,
                allow_reconnect=False,
                connect_timeout=3,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet,
            )
        except Exception as error:
            raise ConnectionError(f"cannot reach NATS at {','.join(self.servers)}: {error}") from None
        js = self.nc.jetstream()
        config = ConsumerConfig(
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT if self.durable else AckPolicy.NONE,
            filter_subject=self.subject,
            inactive_threshold=None if self.durable else 60.0,
        )
        if self.start_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = self.start_seq
        elif self.since_ns is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME  # to the microsecond, rounded down
            config.opt_start_time = _EPOCH + datetime.timedelta(microseconds=self.since_ns // 1000)
        self.subscription = await js.pull_subscribe(
            self.subject, durable=self.name, stream=self.stream, config=config
        )

    async def fetch(self, batch: int, wait: float) -> list[tuple[int, bytes, Any]] | None:
        """The next messages as ``(stream sequence, payload, message)``; None once nothing is pending."""
        import nats.errors

        pending = (await self.subscription.consumer_info()).num_pending
        if pending == 0:
            return None
        try:  # asking for no more than is pending, so that the fetch need not wait out `wait`
            messages = await self.subscription.fetch(min(batch, pending), timeout=wait)
        except nats.errors.TimeoutError:
            return []
        return [(message.metadata.sequence.stream, message.data, message) for message in messages]

    async def close(self) -> None:
        if self.nc is None:
            return
        try:
            if self.durable is None and self.subscription is not None:
                await self.nc.jetstream().delete_consumer(self.stream, self.name)
        finally:
            await self.nc.close()


def _open_segment(path: str) -> tuple[str, io.BufferedIOBase]:
    """The path read and the open file: gzip for a ``.gz`` name, or for a plain segment gzipped since."""
    if path.endswith(".gz"):
        return path, gzip.open(path, "rb")
    try:
        return path, open(path, "rb")
    except FileNotFoundError:
        compressed = path + ".gz"
        if not os.path.exists(compressed):
            raise
        return compressed, gzip.open(compressed, "rb")


class _ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that writes to the streams `main` was given, and raises instead of exiting."""

    def __init__(self, stdout: TextIO, stderr: TextIO, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stdout = stdout
        self._stderr = stderr

    def print_usage(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_usage(self._stdout if file is None else file)

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_help(self._stdout if file is None else file)

    def error(self, message: str) -> NoReturn:
        self.print_usage(self._stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._stderr.write(message)
        raise _ParserExit(status)


def _time_argument(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _tag_argument(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not (key and equals):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


_EPILOG = """\
times:
  ISO 8601, such as 2026-11-28T06:00:00Z, 2026-11-28T06:00:00+01:00,
  2026-11-28T06:00:00.123456789Z or 2026-11-28: a time without an offset, and
  a date alone, are UTC. Or Unix seconds, integer or fraction, such as
  1795845600 or 1795845600.25 (a bare number is always Unix seconds); before
  1970 they are negative: write --since=-86400 (with "=", or argparse takes
  -86400 for an option).
  --since is inclusive, --until exclusive, both exact to the nanosecond.

output:
  One JSON object per line with the keys name, value, timestamp (integer
  nanoseconds since the epoch) and tags, as stored. Samples come in the order
  they were stored, segment after segment, not sorted by timestamp. Closed,
  active and gzipped (segment-<ns>.ndjson.gz) segments are read, those of
  every worker too (segment-<ns>-w<K>.ndjson, with --workers). A line that
  is incomplete (being written, or torn by a crash) or that does not decode
  is skipped with a warning on stderr.

from NATS (--from):
  The stream that ingest --sink fills (--stream, default ingest), every node's
  subject or one (--node), from the first message, stream sequence --seq N,
  or the first message stored at or after --since; until caught up.

exit status:
  0 done, also when stdout closes early (ingest-read | head); 1 no data
  directory, a segment that could not be read, or a stream that could not
  be read (--from); 2 bad arguments.
"""


def _parser(stdout: TextIO, stderr: TextIO) -> _Parser:
    parser = _Parser(
        stdout,
        stderr,
        prog=PROG,
        description="Print the samples stored by ingest as NDJSON on stdout.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=DEFAULT_DATA_DIR,
        help=f"the service's data directory (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="nats://HOST:PORT[,...]",
        help="read the NATS JetStream stream that ingest --sink fills, instead of the data directory",
    )
    parser.add_argument("--stream", default="ingest", help="with --from: the stream (default: ingest)")
    parser.add_argument(
        "--node", help="with --from: only the messages of this ingest node (default: every node)"
    )
    parser.add_argument(
        "--seq",
        type=int,
        metavar="N",
        help="with --from: start at stream sequence N (default: the first message, or --since)",
    )
    parser.add_argument(
        "--durable",
        metavar="NAME",
        help="with --from: a durable consumer of this name, acknowledged as read: the next run goes on "
        "from there (default: a consumer of this run's own, deleted at the end)",
    )
    parser.add_argument(
        "--name",
        metavar="GLOB",
        help="only samples whose whole name matches this shell-style glob (* ? [seq]; case-sensitive)",
    )
    parser.add_argument(
        "--since",
        metavar="T",
        type=_time_argument,
        help="only samples at or after T (ISO 8601, UTC unless an offset is given; or Unix seconds)",
    )
    parser.add_argument(
        "--until",
        metavar="T",
        type=_time_argument,
        help="only samples before T (ISO 8601, UTC unless an offset is given; or Unix seconds)",
    )
    parser.add_argument(
        "--tag",
        metavar="KEY=VALUE",
        type=_tag_argument,
        action="append",
        default=[],
        help="only samples with this tag; may be repeated, and all must match",
    )
    return parser


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run ``ingest-read`` with `argv` (default: the command line); returns the exit status.

    Writes samples to `stdout` and warnings and errors to `stderr`
    (default: ``sys.stdout`` and ``sys.stderr``).  A closed stdout ends the
    run quietly with status 0.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = _parser(out, err)
    try:
        options = parser.parse_args(argv)
        if options.since is not None and options.until is not None and options.since > options.until:
            parser.error("--since is after --until")
    except _ParserExit as stop:
        return stop.status
    query = Query(options.name, options.since, options.until, tuple(options.tag))
    unreadable = False

    def warn(skipped: Skipped) -> None:
        nonlocal unreadable
        unreadable = unreadable or skipped.line is None
        err.write(f"{PROG}: warning: {skipped}\n")

    if options.source is not None:
        return _print_stream(options, query, out, err, warn)
    directory = options.data_dir
    try:
        samples = read_samples(directory, query, warn)
    except FileNotFoundError:
        err.write(f"{PROG}: no data directory at {directory} (--data-dir names another)\n")
        return 1
    except OSError as error:
        err.write(f"{PROG}: cannot list the data directory {directory}: {error.strerror or error}\n")
        return 1
    dumps = ujson.dumps
    write = out.write
    try:
        for sample in samples:
            write(dumps(sample) + "\n")  # as `sample.encode` writes it: stored lines pass through unchanged
        out.flush()
    except BrokenPipeError:
        _silence(out)
        return 0
    except OSError as error:
        err.write(f"{PROG}: cannot write the output: {error.strerror or error}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 1 if unreadable else 0


def _print_stream(
    options: argparse.Namespace, query: Query, out: TextIO, err: TextIO, warn: Callable[[Skipped], None]
) -> int:
    """``--from``: the samples of the stream, as `main` prints those of segments."""
    servers = [
        part.strip() if "://" in part else f"nats://{part.strip()}"
        for part in options.source.split(",")
        if part.strip()
    ]
    subject = f"{options.stream}.{options.node}" if options.node else f"{options.stream}.>"
    lines = stream_lines(servers, options.stream, subject, options.seq, query.since_ns, options.durable)
    dumps = ujson.dumps
    try:
        for sample in select_lines(lines, query, warn):
            out.write(dumps(sample) + "\n")
        out.flush()
    except BrokenPipeError:
        _silence(out)
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # nats-py's errors, the connection's included
        err.write(f"{PROG}: cannot read stream {options.stream} from {options.source}: {error!r}\n")
        return 1
    return 0


def _silence(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null after a broken pipe.

    What is still buffered would otherwise fail again when the interpreter
    flushes the stream at exit, and print a traceback (the recipe of the
    Python documentation's note on SIGPIPE).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
