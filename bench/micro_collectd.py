"""collectd ``write_http`` JSON decoding cost per value, and ujson's share of it.

    python bench/micro_collectd.py --rounds 5

Each round times `ingest.collectd.decode` and `ujson.loads` alone on each body with `timeit` (best of
5 loops of 200 calls); it prints the median over rounds in microseconds a value (nulls included).
The bodies:

- ``fixture``: ``tests/fixtures/collectd.json``, one POST of collectd 5.12 (cpu, memory, load and
  interface plugins, 41 value lists, 61 values: nearly every value list a tag set of its own);
- ``load``: 100 value lists of the ``load`` plugin, three gauges each, one host, each its own time;
- ``cpu``: 100 value lists of the ``cpu`` plugin, one derive each, 8 cpus by 4 states, one time.
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

from ingest.collectd import decode  # noqa: E402

STATES = ["user", "system", "idle", "wait"]


def bodies() -> dict[str, bytes]:
    with open(os.path.join(ROOT, "tests", "fixtures", "collectd.json"), "rb") as fixture:
        recorded = fixture.read()

    def value_list(values: list[float], dsnames: list[str], **identity: object) -> dict[str, object]:
        return {"values": values, "dstypes": ["gauge"] * len(values), "dsnames": dsnames, **identity}

    load = [
        value_list(
            [0.5 + i / 1000, 1.25, 0.75],
            ["shortterm", "midterm", "longterm"],
            time=1796199706.752 + i,
            interval=10.0,
            host="a.example.com",
            plugin="load",
            plugin_instance="",
            type="load",
            type_instance="",
        )
        for i in range(100)
    ]
    cpu = [
        value_list(
            [123456 + i],
            ["value"],
            time=1796199706.752,
            interval=10.0,
            host="a.example.com",
            plugin="cpu",
            plugin_instance=str(i % 8),
            type="cpu",
            type_instance=STATES[i % 4],
        )
        for i in range(100)
    ]
    return {
        "fixture": recorded,
        "load": json.dumps(load, separators=(",", ":")).encode(),
        "cpu": json.dumps(cpu, separators=(",", ":")).encode(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    for kind, body in bodies().items():
        values = sum(len(entry["values"]) for entry in json.loads(body))
        assert decode(body, 1).rejected == 0, kind
        decoding, parsing = [], []
        for _ in range(rounds):
            decoding.append(min(timeit.repeat(lambda body=body: decode(body, 1), number=200, repeat=5)))
            parsing.append(min(timeit.repeat(lambda body=body: ujson.loads(body), number=200, repeat=5)))
        per_value = statistics.median(decoding) / 200 / values * 1e6
        parse_share = statistics.median(parsing) / 200 / values * 1e6
        print(f"{kind:8} {values:4} values  {per_value:5.2f} us a value  (ujson.loads {parse_share:4.2f})")


if __name__ == "__main__":
    main()
