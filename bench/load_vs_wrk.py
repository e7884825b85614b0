"""`ingest-load` against wrk on the same case: does the project's load tool report what wrk does?

    python bench/load_vs_wrk.py --batch 1000 --processes 2 --connections 100 --seconds 10 --repeat 3

For each of `--repeat` rounds, a fresh `twistd -n ingest` pinned to cpu0 (as `bench/compare.py`
starts it) is driven from cpu1 first by wrk, then, on another fresh server, by `ingest-load
--processes N`, both with `--connections` keep-alive connections for `--seconds`.  wrk posts one of
`ingest-load`'s own JSON bodies (`ingest.load.make_bodies`, same batch and seed), so the two send the
same kind of samples.  Prints each run and the medians: requests/s by each, their ratio, and the
load tool's busiest process's CPU (near one core, the figure is the client's limit, not the server's).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

from compare import HERE, start_server, stop_server

from ingest.load import make_bodies


def run_wrk(port: int, body_file: str, args: argparse.Namespace) -> float:
    env = dict(
        os.environ,
        FORMAT="file",
        BODY_FILE=body_file,
        BODY_PATH="/metrics",
        BODY_TYPE="application/json",
        BODY_ENCODING="",
    )
    script = os.path.join(HERE, "post.lua")
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", script]
    wrk = subprocess.run(
        ["taskset", "-c", "1", *command, f"http://127.0.0.1:{port}/metrics"],
        capture_output=True,
        text=True,
        env=env,
        timeout=args.seconds + 60,
        check=True,
    )
    for line in wrk.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(dict(pair.split("=") for pair in line.split()[1:])["rps"])
    raise RuntimeError(wrk.stdout + wrk.stderr)


def run_load(port: int, args: argparse.Namespace) -> tuple[float, float]:
    load = shutil.which("ingest-load", path=os.path.dirname(sys.executable)) or "ingest-load"
    command = [load, "--url", f"http://127.0.0.1:{port}", "--processes", str(args.processes)]
    command += ["--connections", str(args.connections), "--duration", str(args.seconds)]
    command += ["--batch", str(args.batch), "--seed", str(args.seed), "--json"]
    run = ["taskset", "-c", "1", *command]
    done = subprocess.run(run, capture_output=True, text=True, timeout=args.seconds + 60, check=True)
    summary = json.loads(done.stdout)
    return float(summary["requests_per_second"]), float(summary["client_cpu_busiest"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as body:
        body.write(make_bodies("json", args.batch, 1, random.Random(args.seed))[0])
    wrk_rps: list[float] = []
    load_rps: list[float] = []
    try:
        for round_ in range(1, args.repeat + 1):
            server, port, workdir = start_server("wrk", "")
            try:
                wrk_rps.append(run_wrk(port, body.name, args))
            finally:
                stop_server(server, workdir)
            server, port, workdir = start_server("load", "")
            try:
                rps, cpu = run_load(port, args)
                load_rps.append(rps)
            finally:
                stop_server(server, workdir)
            print(
                f"run {round_}: wrk {wrk_rps[-1]:,.0f} req/s, ingest-load --processes {args.processes} "
                f"{rps:,.0f} req/s (busiest process {cpu:.0%} of a core), ratio {rps / wrk_rps[-1]:.3f}",
                flush=True,
            )
    finally:
        os.unlink(body.name)
    wrk_median, load_median = statistics.median(wrk_rps), statistics.median(load_rps)
    print(
        f"medians of {args.repeat} runs, batch {args.batch}, {args.connections} connections: wrk "
        f"{wrk_median:,.0f} req/s, ingest-load {load_median:,.0f} req/s, ratio {load_median / wrk_median:.3f}"
    )


if __name__ == "__main__":
    main()
