"""A long fuzz run of the parsers (not part of CI): any bytes either parse or raise IngestError.

    python bench/fuzz.py [--examples 20000]

The same properties run in CI with a few hundred examples each
(tests/test_http11.py, tests/test_bodies.py, tests/test_lineproto.py); this
runs them with many more and prints the count per target.
"""

from __future__ import annotations

import argparse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import http11, lineproto
from ingest.bodies import JSON, LINE, NDJSON, SNIFF, Job, decode_job
from ingest.errors import IngestError

LIMITS = http11.Limits(max_header_line=256, max_headers=8, max_header_bytes=1024, max_body=4096)


def request_line(data: bytes) -> None:
    try:
        http11.parse_request_line(data)
    except IngestError:
        pass


def head(lines: list[bytes]) -> None:
    """The fuzzed fields after a Host, as HTTP/1.1, and alone as HTTP/1.0: the framing decisions are
    reached whether the fuzzed fields hold a Host or not."""
    for version, first in ((b"HTTP/1.1", [b"Host: fuzz"]), (b"HTTP/1.0", [])):
        parser = http11.HeadParser(LIMITS)
        try:
            for line in first + lines:
                parser.add(line)
            parser.finish(version, b"POST")
        except IngestError:
            pass


def chunked(data: bytes, cuts: list[int]) -> None:
    decoder = http11.ChunkedDecoder(LIMITS)
    pieces = []
    start = 0
    try:
        for cut in [*sorted(cuts), len(data)]:
            pieces.append(data[start:cut])
            start = cut
        for piece in pieces:
            _, rest = decoder.feed(piece)
            if rest is not None:
                break
    except IngestError:
        pass


def bodies(kind: str, body: bytes, gzipped: bool) -> None:
    try:
        decode_job(Job(kind, body, 1, gzipped, 4096, 1))
    except IngestError:
        pass


def line_protocol(body: bytes) -> None:
    lineproto.parse(body, 1, 1_700_000_000_000_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=20000)
    args = parser.parse_args()
    run = settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck))
    chunk_alphabet = st.sampled_from(
        [b"0", b"1", b"a", b"F", b"\r\n", b";x=y", b" ", b"\r", b"\n", b"zz", b'"', b"\\", b"=", b"\t"]
    )
    line_alphabet = st.sampled_from(
        [
            b"cpu",
            b",",
            b"=",
            b" ",
            b"\\",
            b'"',
            b"host",
            b"1",
            b"1i",
            b"1u",
            b"t",
            b"-",
            b".",
            b"e",
            b"\n",
            b"#",
        ]
    )
    targets = {
        "parse_request_line": given(st.binary(max_size=64))(request_line),
        "HeadParser": given(st.lists(st.binary(max_size=48), max_size=10))(head),
        "ChunkedDecoder": given(
            st.lists(chunk_alphabet, max_size=40).map(b"".join), st.lists(st.integers(0, 200), max_size=6)
        )(chunked),
        "decode_job": given(
            st.sampled_from([JSON, NDJSON, SNIFF, LINE]), st.binary(max_size=256), st.booleans()
        )(bodies),
        "lineproto.parse": given(st.lists(line_alphabet, max_size=60).map(b"".join))(line_protocol),
    }
    for name, target in targets.items():
        run(target)()
        print(f"{name}: {args.examples} examples, no exception but IngestError", flush=True)


if __name__ == "__main__":
    main()
