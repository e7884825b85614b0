"""Run contenders against wrk in one invocation, alternating them, and print medians and ratios.

Each contender is `twistd -n ingest` with its own extra options, or the
word ``baseline`` for `bench/baseline_web.py` (stock twisted.web), pinned
to cpu0; wrk is pinned to cpu1.  Usage:

    python bench/compare.py --seconds 10 --repeat 5 --connections 100 \\
        --contender "web=baseline" --contender "ingest=--threads 16"

`--tree NAME=DIR` runs contender NAME from another checkout (its
``ingest`` package first on PYTHONPATH), so a change is measured against
the code before it in the same invocation:

    git worktree add /tmp/before HEAD
    python bench/compare.py --contender "web=baseline" --contender "before=" \
        --contender "after=" --tree before=/tmp/before

`--body NAME=FILE,PATH,TYPE,ENCODING,SAMPLES` makes contender NAME post the
bytes of FILE to PATH (a recorded agent's body; ENCODING may be empty), each
request holding SAMPLES samples, so that formats are compared by samples/s:

    python bench/compare.py --batch 100 --contender "json=" --contender "rw=" \\
        --body "rw=tests/fixtures/remote_write.snappy,/api/v1/write,application/x-protobuf,snappy,351"

The first contender is the denominator of the ratios, which compare samples/s.  Needs `wrk` (Debian
package) and `taskset`; `pip install .` first.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


TREES: dict[str, str] = {}
"""Contender name to the checkout it runs from (`--tree`)."""
BODIES: dict[str, list[str]] = {}
"""Contender name to [file, path, content type, content encoding, samples a request] (`--body`)."""


def start_server(name: str, options: str) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start a contender pinned to cpu0 and wait until it accepts connections."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=f"ingest-bench-{name}-")
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"
    if options.strip() == "baseline":
        command = [sys.executable, os.path.join(HERE, "baseline_web.py"), "--port", str(port)]
    else:
        endpoint = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
        command = [twistd, "-n", "--pidfile=", "ingest", "--port", endpoint, *shlex.split(options)]
    env = dict(os.environ)
    if name in TREES:
        env["PYTHONPATH"] = os.path.abspath(TREES[name])
    server = subprocess.Popen(
        ["taskset", "-c", "0", *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(port, time.monotonic() + 20)
    return server, port, workdir


def stop_server(server: subprocess.Popen[bytes], workdir: str) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    shutil.rmtree(workdir, ignore_errors=True)


def run_once(name: str, options: str, args: argparse.Namespace) -> dict[str, float]:
    server, port, workdir = start_server(name, options)
    try:
        env = dict(os.environ, BATCH=str(args.batch), FORMAT=args.format)
        if name in BODIES:
            body_file, path, content_type, encoding, _ = BODIES[name]
            env.update(
                FORMAT="file",
                BODY_FILE=os.path.abspath(body_file),
                BODY_PATH=path,
                BODY_TYPE=content_type,
                BODY_ENCODING=encoding,
            )
        wrk = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                f"-t{args.wrk_threads}",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                os.path.join(HERE, "post.lua"),
                f"http://127.0.0.1:{port}/metrics",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=args.seconds + 60,
        )
        match = re.search(r"RESULT (.*)", wrk.stdout)
        if not match:
            raise RuntimeError(wrk.stdout + wrk.stderr)
        figures = {key: float(value) for key, value in (pair.split("=") for pair in match.group(1).split())}
        cpu = read_cpu(server.pid)
        figures["server_cpu_us_per_req"] = cpu / max(figures["rps"] * args.seconds, 1) * 1e6
        return figures
    finally:
        stop_server(server, workdir)


def run_alternating(
    contenders: list[list[str]], repeat: int, run: Callable[[str, str], dict[str, float]], label: str = ""
) -> dict[str, list[dict[str, float]]]:
    """Run every contender `repeat` times, alternating them; print each run; return the figures by name."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in contenders}
    for repetition in range(repeat):
        for name, options in contenders:
            figures = run(name, options)
            results[name].append(figures)
            print(
                f"{label}run {repetition + 1} {name}: "
                + " ".join(f"{k}={v:.3f}" for k, v in figures.items()),
                flush=True,
            )
    return results


def read_cpu(pid: int) -> float:
    """CPU seconds used so far by the process (user + system)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--format", choices=["json", "line"], default="json")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--contender", action="append", required=True, help="name=twistd ingest options")
    parser.add_argument("--tree", action="append", default=[], help="name=checkout directory to run it from")
    parser.add_argument("--body", action="append", default=[], help="name=file,path,type,encoding,samples")
    args = parser.parse_args()
    TREES.update(spec.split("=", 1) for spec in args.tree)
    BODIES.update((name, spec.split(",")) for name, spec in (item.split("=", 1) for item in args.body))
    contenders = [spec.split("=", 1) for spec in args.contender]
    results = run_alternating(contenders, args.repeat, lambda name, options: run_once(name, options, args))

    def samples(name: str) -> int:
        return int(BODIES[name][4]) if name in BODIES else args.batch

    base = statistics.median(r["rps"] for r in results[contenders[0][0]]) * samples(contenders[0][0])
    print(
        f"\nmedians of {args.repeat} runs, {args.connections} connections, "
        f"batch {args.batch}, {args.seconds}s each"
    )
    print("| contender | req/s | samples/s | ratio | p50 ms | p99 ms | server CPU us/req | non-2xx |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _ in contenders:
        runs = results[name]
        rps = statistics.median(r["rps"] for r in runs)
        print(
            f"| {name} | {rps:,.0f} | {rps * samples(name):,.0f} | {rps * samples(name) / base:.2f} "
            f"| {statistics.median(r['p50_ms'] for r in runs):.2f} "
            f"| {statistics.median(r['p99_ms'] for r in runs):.2f} "
            f"| {statistics.median(r['server_cpu_us_per_req'] for r in runs):.0f} "
            f"| {sum(r['non2xx'] for r in runs):.0f} |"
        )


if __name__ == "__main__":
    main()
