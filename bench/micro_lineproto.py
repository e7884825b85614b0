"""Line-protocol parse cost per point, by kind of body, for one or more checkouts in one invocation.

    python bench/micro_lineproto.py --tree before=/tmp/before --tree after=. --repeat 5
    python bench/micro_lineproto.py --tree before=/tmp/before --tree after=. --body typical --callgrind 100

Each tree's `ingest.lineproto.parse` runs in a subprocess of its own (its ``ingest`` package first on
``sys.path``), the trees alternating round after round; each round times every body with `timeit`
(best of 5 loops of 200 calls).  It prints the median over rounds in microseconds a point, and each
tree's ratio to the first.

``--callgrind N`` counts instructions instead, which the load of the machine does not change: each tree
and body runs under ``valgrind --tool=callgrind`` twice, parsing the body once (a warm-up) and then 0
or N times, and the difference over N is the instructions of one parse (``PYTHONHASHSEED=0``: the
same count run after run); the ratio in brackets is the first tree's count over this one's.
``--body KIND`` (repeated) picks bodies; all by default.  The bodies are 100 lines each:

- ``bench``: `bench/post.lua`'s line, one float field, no timestamp;
- ``telegraf``: three float fields and a timestamp, 100 hosts and 100 timestamps (the worst case of
  Telegraf's ``cpu`` line: no head or timestamp repeats);
- ``typical``: Telegraf's typical ``cpu`` line, three tags, three float fields that vary from line to
  line, a timestamp a gather (10 hosts, 4 cpus, 10 lines a timestamp);
- ``string``: the telegraf line with a string field (the quoted path and the line scanner);
- ``escaped``: the telegraf line with escaped spaces in a tag (Windows counters' names).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile


def typical_line(i: int) -> str:
    user = 12.5 + (i % 7) * 0.25
    system = 3.25 + (i % 5) * 0.5
    idle = 100 - user - system
    stamp = 1_700_000_000_000_000_000 + (i // 10) * 10_000_000_000
    return (
        f"cpu,host=server{i % 10:02d},region=us-west,cpu=cpu{i % 4} "
        f"usage_user={user},usage_system={system},usage_idle={idle} {stamp}"
    )


BODIES = {
    "bench": "\n".join(f"cpu,host=bench{i},region=eu usage_user=0.{i}" for i in range(100)),
    "telegraf": "\n".join(
        f"cpu,host=h{i},region=eu usage_user=0.5,usage_system=0.25,usage_idle=99.25 17000000000000{i:05d}"
        for i in range(100)
    ),
    "typical": "\n".join(typical_line(i) for i in range(100)),
    "string": "\n".join(
        f'cpu,host=h{i},region=eu usage_user=0.5,state="running ok",usage_idle=99.25 17000000000000{i:05d}'
        for i in range(100)
    ),
    "escaped": "\n".join(
        f"win,host=h{i},object=Processor\\ Information usage_user=0.5,usage_idle=99.25 17000000000000{i:05d}"
        for i in range(100)
    ),
}

CHILD = """
import json, sys, timeit
sys.path.insert(0, sys.argv[1])
from ingest.lineproto import parse
bodies = json.loads(sys.stdin.read())
out = {}
for kind, text in bodies.items():
    body = text.encode()
    points = body.count(b"\\n") + 1
    assert parse(body, 1, 1).rejected == 0, kind
    best = min(timeit.repeat(lambda: parse(body, 1, 1), number=200, repeat=5))
    out[kind] = best / 200 / points * 1e6
print(json.dumps(out))
"""

# Under callgrind: one warm-up parse, then `count` more; nothing else differs between two counts.
COUNTED = """
import sys
sys.path.insert(0, sys.argv[1])
from ingest.lineproto import parse
body = sys.stdin.buffer.read()
assert parse(body, 1, 1).rejected == 0
for _ in range(int(sys.argv[2])):
    parse(body, 1, 1)
"""


def run(tree: str, bodies: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, tree],
        input=json.dumps(bodies),
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, float] = json.loads(result.stdout)
    return times


def instructions(tree: str, body: str, count: int) -> int:
    """The instructions callgrind counts for a process that parses `body` 1 + `count` times."""
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out.name}",
                *(sys.executable, "-c", COUNTED, tree, str(count)),
            ],
            input=body.encode(),
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict probes, run after run
        )
    match = re.search(rb"Collected : (\d+)", result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR, a checkout to measure")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--body", action="append", choices=sorted(BODIES), help="the bodies (default all)")
    parser.add_argument("--callgrind", type=int, metavar="N", help="count instructions of N parses instead")
    options = parser.parse_args()
    trees = [tuple(item.split("=", 1)) for item in options.tree]
    bodies = {kind: BODIES[kind] for kind in options.body or BODIES}
    first = trees[0][0]
    if options.callgrind:
        print("| tree | " + " | ".join(f"{kind} instructions a body" for kind in bodies) + " |")
        print("| --- |" + " ---: |" * len(bodies))
        counts: dict[str, dict[str, float]] = {}
        for name, directory in trees:
            counts[name] = {
                kind: (instructions(directory, text, options.callgrind) - instructions(directory, text, 0))
                / options.callgrind
                for kind, text in bodies.items()
            }
            mine, firsts = counts[name], counts[first]
            cells = [f"{mine[kind]:,.0f} ({firsts[kind] / mine[kind]:.2f}x)" for kind in bodies]
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        return
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(options.repeat):
        for name, directory in trees:
            rounds[name].append(run(directory, bodies))
    medians = {
        name: {kind: statistics.median(r[kind] for r in runs) for kind in bodies}
        for name, runs in rounds.items()
    }
    print("| tree | " + " | ".join(f"{kind} us/point" for kind in bodies) + " |")
    print("| --- |" + " ---: |" * len(bodies))
    for name, _ in trees:
        cells = [
            f"{medians[name][kind]:.2f} ({medians[name][kind] / medians[first][kind]:.2f}x)"
            for kind in bodies
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
