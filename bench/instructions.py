"""Server instructions per request, counted by callgrind: a figure the machine's noise does not move.

On a shared 2-core machine the same req/s comparison swings by 20% from one
run to the next (MEASUREMENTS.md); an instruction count does not.  This runs
`twistd -n ingest` under ``valgrind --tool=callgrind`` (every thread
counted, the parse pool's included), sends it `--requests` requests of one
sample over `--connections` keep-alive connections (each sends its next
request once its last is answered, as wrk does), stops it with SIGTERM, and
reads the instructions it executed.  Done for N and 2N requests, the
difference divided by N is the cost of one request: start-up and shutdown
cancel out.  Each tree (`--tree NAME=DIR`, ``.`` for this checkout) is
measured `--repeat` times, alternated; the table gives medians.

    python bench/instructions.py --requests 5000 --connections 100 \\
        --tree before=/tmp/before --tree after=.

It counts work, not time: what a change costs in cache misses, syscalls'
own kernel time or lock waits does not show.  Needs valgrind.  Slow: a
request costs about 50 times its normal time under valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BODY = b'{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}'
REQUEST = (
    b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER_END = b'{"accepted":1}'
TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def client(port: int, requests: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(requests):
        writer.write(REQUEST)
        await reader.readuntil(ANSWER_END)
    writer.close()
    await writer.wait_closed()


async def load(port: int, requests: int, connections: int) -> None:
    share, extra = divmod(requests, connections)
    await asyncio.gather(*(client(port, share + (i < extra)) for i in range(connections)))


def wait_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
                if probe.recv(100).startswith(b"HTTP/1.1 204"):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def count(tree: str, requests: int, connections: int, options: list[str]) -> int:
    """Instructions the server executed from start to stop, serving `requests` requests."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ingest-instructions-")
    out = os.path.join(workdir, "callgrind.out")
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            twistd,
            "-n",
            "--pidfile=",
            "ingest",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            *options,
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, time.monotonic() + 120)
        if requests:
            asyncio.run(load(port, requests, connections))
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
        with open(out, "rb") as profile:
            match = TOTALS.search(profile.read())
        if match is None:
            raise RuntimeError("no totals in the callgrind output")
        return int(match.group(1))
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", action="append", required=True, help="name=checkout directory")
    parser.add_argument("--options", default="", help="extra twistd ingest options for every tree")
    args = parser.parse_args()
    trees = [spec.split("=", 1) for spec in args.tree]
    options = args.options.split()
    results: dict[str, list[float]] = {name: [] for name, _ in trees}
    for run in range(args.repeat):
        for name, tree in trees:
            small = count(tree, args.requests, args.connections, options)
            large = count(tree, 2 * args.requests, args.connections, options)
            per_request = (large - small) / args.requests
            results[name].append(per_request)
            print(f"run {run + 1} {name}: {per_request:,.0f} instructions a request", flush=True)
    first = statistics.median(results[trees[0][0]])
    print(f"\nmedians of {args.repeat} runs, {args.requests} requests more, {args.connections} connections")
    print("| tree | instructions a request | ratio |")
    print("| --- | ---: | ---: |")
    for name, _ in trees:
        median = statistics.median(results[name])
        print(f"| {name} | {median:,.0f} | {median / first:.3f} |")


if __name__ == "__main__":
    main()
