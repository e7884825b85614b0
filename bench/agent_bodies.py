"""Write the bodies of BENCHMARKS.md's issue 12 table to a directory (default /tmp).

    python bench/agent_bodies.py [DIR]

- ``otlp_1000.pb``: an OTLP/HTTP protobuf body of 1,000 points (`micro_otlp.request(50, 20, False)`);
- ``rw_as.json`` and ``otlp_as.json``: the samples that the recorded remote-write body
  (``tests/fixtures/remote_write.snappy``) and ``otlp_1000.pb`` store, as JSON arrays for
  ``POST /metrics`` (timestamps in seconds), to compare the formats on the same samples.
"""

from __future__ import annotations

import os
import sys

import ujson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import micro_otlp

from ingest import otlp, remote_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_json(lines: list[str]) -> str:
    samples = []
    for line in lines:
        stored = ujson.loads(line)
        stored["timestamp"] = stored["timestamp"] / 1e9
        samples.append(stored)
    return str(ujson.dumps(samples))


def main() -> None:
    directory = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    otlp_body = micro_otlp.request(50, 20, False).SerializeToString()
    with open(os.path.join(directory, "otlp_1000.pb"), "wb") as file:
        file.write(otlp_body)
    with open(os.path.join(ROOT, "tests", "fixtures", "remote_write.snappy"), "rb") as file:
        remote = remote_write.decode(file.read(), 1 << 25)
    otlp_lines = otlp.decode(otlp_body, False, 1_700_000_000_000_000_000).lines
    for name, lines in (("rw_as.json", remote.lines), ("otlp_as.json", otlp_lines)):
        with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
            file.write(as_json(lines))


if __name__ == "__main__":
    main()
