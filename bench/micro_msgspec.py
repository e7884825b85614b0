"""The two JSON sample paths of ``POST /metrics``, ujson's and msgspec's, on the same bodies.

    python bench/micro_msgspec.py [--repeat 5]

`ingest.bodies.decode_job` of one ``application/json`` body per case, timed with `timeit` (best of
5 loops of 20 calls), the two paths alternating within each round; the tables give the median over
``--repeat`` rounds in microseconds a sample:

- ``100-same``: 100 identical samples ``{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}``
  (the body of ``bench/post.lua``);
- ``1000-same``: 1,000 of them (Telegraf's default batch);
- ``100-distinct``: 100 distinct samples (distinct names and tag values), each with a fractional
  timestamp and 3 tags;
- ``ndjson-100-same``: the first body as NDJSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ingest import bodies

NOW = 1_700_000_000_123_456_789
SAME = {"name": "cpu.load", "value": 0.42, "tags": {"host": "bench"}}


def distinct(count: int) -> list[dict[str, object]]:
    return [
        {
            "name": f"metric.{index % 37}.load",
            "value": index * 0.37,
            "timestamp": 1_700_000_000 + index * 0.25,
            "tags": {"host": f"web-{index}", "dc": "eu-west", "rack": f"r{index % 7}"},
        }
        for index in range(count)
    ]


def cases() -> list[tuple[str, str, bytes, int]]:
    return [
        ("100-same", bodies.JSON, json.dumps([SAME] * 100).encode(), 100),
        ("1000-same", bodies.JSON, json.dumps([SAME] * 1000).encode(), 1000),
        ("100-distinct", bodies.JSON, json.dumps(distinct(100)).encode(), 100),
        ("ndjson-100-same", bodies.NDJSON, "\n".join([json.dumps(SAME)] * 100).encode(), 100),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    for name, kind, body, samples in cases():
        jobs = {path: bodies.Job(kind, body, NOW, parser=path) for path in bodies.JSON_PARSERS}
        results = {path: bodies.decode_job(job) for path, job in jobs.items()}
        assert results[bodies.UJSON] == results[bodies.MSGSPEC], name  # the same stored bytes
        timings: dict[str, list[float]] = {path: [] for path in jobs}
        for _ in range(options.repeat):
            for path, job in jobs.items():
                timer = timeit.Timer(lambda job=job: bodies.decode_job(job))
                timings[path].append(min(timer.repeat(5, 20)) / 20 / samples * 1e6)
        ujson_us = statistics.median(timings[bodies.UJSON])
        msgspec_us = statistics.median(timings[bodies.MSGSPEC])
        print(
            f"{name:16} ujson {ujson_us:6.3f} us/sample  msgspec {msgspec_us:6.3f} us/sample"
            f"  ratio {ujson_us / msgspec_us:4.2f}x"
        )


if __name__ == "__main__":
    main()
