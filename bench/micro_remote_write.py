"""Remote-write decoding cost per stored sample, against the JSON path for the same samples, in one run.

    python bench/micro_remote_write.py [--repeat 5]

The body is `tests/fixtures/remote_write.snappy`, recorded from a real Prometheus (377 series of one
sample each; 351 stored, 26 NaN skipped).  The JSON body holds the same 351 samples as an array of
objects (timestamps in seconds), decoded by `ingest.bodies.decode_metrics`.  Each round times, with
`timeit` (best of 5 loops of 100 calls):

- ``json``: the JSON array through `decode_metrics`;
- ``remote_cold``: `ingest.remote_write.decode` with its memo of label sets emptied before each
  call (a sender's first request, or more series than the memo holds);
- ``remote_warm``: `decode` with the label sets remembered (every later request of a sender).

It prints the median over rounds in microseconds a stored sample, and each figure's ratio to ``json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ujson  # noqa: E402

from ingest import bodies, remote_write  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "remote_write.snappy")
LIMIT = 1 << 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    options = parser.parse_args()
    with open(FIXTURE, "rb") as fixture:
        body = fixture.read()
    lines = remote_write.decode(body, LIMIT).lines
    samples = [json.loads(line) for line in lines]
    for sample in samples:
        sample["timestamp"] /= 1e9
    json_body = ujson.dumps(samples).encode()
    assert bodies.decode_metrics(bodies.JSON, json_body, 1).accepted == len(lines)

    def cold() -> None:
        remote_write._series_text.cache_clear()
        remote_write.decode(body, LIMIT)

    cases = {
        "json": lambda: bodies.decode_metrics(bodies.JSON, json_body, 1),
        "remote_cold": cold,
        "remote_warm": lambda: remote_write.decode(body, LIMIT),
    }
    figures: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(options.repeat):
        for name, call in cases.items():
            call()
            best = min(timeit.repeat(call, number=100, repeat=5))
            figures[name].append(best / 100 / len(lines) * 1e6)
    base = statistics.median(figures["json"])
    print(f"{len(lines)} stored samples a body; us a stored sample, median of {options.repeat} rounds")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:12} {median:6.2f}  x{median / base:.2f}")


if __name__ == "__main__":
    main()
