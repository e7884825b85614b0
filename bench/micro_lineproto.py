"""Line-protocol parse cost per point, by kind of body, for one or more checkouts in one invocation.

    python bench/micro_lineproto.py --tree before=/tmp/before --tree after=. --repeat 5

Each tree's `ingest.lineproto.parse` runs in a subprocess of its own (its ``ingest`` package first on
``sys.path``), the trees alternating round after round; each round times every body with `timeit`
(best of 5 loops of 200 calls).  It prints the median over rounds in microseconds a point, and each
tree's ratio to the first.  The bodies are 100 lines each:

- ``bench``: `bench/post.lua`'s line, one float field, no timestamp (the parser's inline path);
- ``telegraf``: three float fields and a timestamp, 100 hosts (Telegraf's typical ``cpu`` line);
- ``string``: the telegraf line with a string field (the quoted path and the line scanner);
- ``escaped``: the telegraf line with escaped spaces in a tag (Windows counters' names).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

BODIES = {
    "bench": "\n".join(f"cpu,host=bench{i},region=eu usage_user=0.{i}" for i in range(100)),
    "telegraf": "\n".join(
        f"cpu,host=h{i},region=eu usage_user=0.5,usage_system=0.25,usage_idle=99.25 17000000000000{i:05d}"
        for i in range(100)
    ),
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


def run(tree: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, tree],
        input=json.dumps(BODIES),
        capture_output=True,
        text=True,
        check=True,
    )
    times: dict[str, float] = json.loads(result.stdout)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR, a checkout to measure")
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    trees = [tuple(item.split("=", 1)) for item in options.tree]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(options.repeat):
        for name, directory in trees:
            rounds[name].append(run(directory))
    first = trees[0][0]
    medians = {
        name: {kind: statistics.median(r[kind] for r in runs) for kind in BODIES}
        for name, runs in rounds.items()
    }
    print("| tree | " + " | ".join(f"{kind} us/point" for kind in BODIES) + " |")
    print("| --- |" + " ---: |" * len(BODIES))
    for name, _ in trees:
        cells = [
            f"{medians[name][kind]:.2f} ({medians[name][kind] / medians[first][kind]:.2f}x)"
            for kind in BODIES
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
