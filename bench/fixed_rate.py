"""Latency at a fixed request rate (open loop), with h2load's per-request log.

Starts each contender (`twistd -n ingest` with its options, or ``baseline``)
pinned to cpu0 and drives it from cpu1 with ``h2load --h1`` at `--rate`
requests per second spread over `--connections` keep-alive connections,
alternating the contenders `--repeat` times, and prints medians of p50, p99
and max latency from h2load's ``--log-file`` (one line per request).  The
seed's phase-7 load: 2,253 req/s over 100 connections.  ``--driver paced``
uses `bench/paced.py` instead, which spaces the requests evenly (h2load's
per-connection timers fire in step: its load comes in bursts).

    python bench/fixed_rate.py --rate 2253 --connections 100 --seconds 10 --repeat 3 \\
        --contender "buffered=--ack buffered" --contender "durable=--ack durable"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from compare import HERE, TREES, run_alternating, start_server, stop_server


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_once(name: str, options: str, args: argparse.Namespace) -> dict[str, float]:
    server, port, workdir = start_server(name, options)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            body = os.path.join(scratch, "body.json")
            with open(body, "wb") as out:
                out.write(b'{"name":"cpu.load","value":0.42,"tags":{"host":"bench"}}')
            log = os.path.join(scratch, "requests.log")
            per_client = args.rate / args.connections
            if args.driver == "paced":
                command = [
                    sys.executable,
                    os.path.join(HERE, "paced.py"),
                    f"--port={port}",
                    f"--rate={args.rate}",
                    f"--connections={args.connections}",
                    f"--seconds={args.seconds}",
                    f"--log={log}",
                ]
            else:
                command = [
                    "h2load",
                    "--h1",
                    "-t1",
                    f"-c{args.connections}",
                    f"--rps={per_client:.4f}",
                    f"-D{args.seconds}",
                    "-d",
                    body,
                    "-H",
                    "Content-Type: application/json",
                    f"--log-file={log}",
                    f"http://127.0.0.1:{port}/metrics",
                ]
            result = subprocess.run(
                ["taskset", "-c", "1", *command],
                capture_output=True,
                text=True,
                timeout=args.seconds + 60,
            )
            times, ok = [], 0
            with open(log) as lines:
                for line in lines:
                    fields = line.split()
                    if len(fields) >= 3:
                        times.append(int(fields[2]) / 1000.0)
                        ok += fields[1].startswith("2")
            if not times:
                raise RuntimeError(result.stdout + result.stderr)
            times.sort()
            return {
                "req_s": len(times) / args.seconds,
                "ok_pct": 100.0 * ok / len(times),
                "p50_ms": percentile(times, 0.5),
                "p99_ms": percentile(times, 0.99),
                "max_ms": times[-1],
            }
    finally:
        stop_server(server, workdir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2253)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--driver",
        choices=["h2load", "paced"],
        default="h2load",
        help="h2load (a timer per connection: bursts) or bench/paced.py (evenly spaced requests)",
    )
    parser.add_argument("--contender", action="append", required=True, help="name=twistd ingest options")
    parser.add_argument("--tree", action="append", default=[], help="name=checkout directory to run it from")
    args = parser.parse_args()
    TREES.update(spec.split("=", 1) for spec in args.tree)
    contenders = [spec.split("=", 1) for spec in args.contender]
    results = run_alternating(contenders, args.repeat, lambda name, options: run_once(name, options, args))
    print(
        f"\nmedians of {args.repeat} runs at {args.rate:g} req/s over {args.connections} connections, "
        f"{args.seconds}s each ({args.driver}, open loop)"
    )
    print("| contender | req/s | 2xx % | p50 ms | p99 ms | max ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in contenders:
        runs = results[name]
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        print(
            f"| {name} | {med['req_s']:,.0f} | {med['ok_pct']:.1f} | {med['p50_ms']:.2f} "
            f"| {med['p99_ms']:.2f} | {med['max_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
