"""RSS per idle keep-alive connection: open N connections, each makes one request, then idles.

Starts `twistd -n ingest` pinned to cpu0, opens N connections from this
process (each sends one POST and reads its 202, so the connection went
through a whole exchange), reads VmRSS, checks `/stats` counts them open,
and prints the growth per connection.  A first round of N connections,
then closed, warms the allocator up, so that the figure is the memory an
open connection holds, not the arenas the first burst of requests grew.

    python bench/idle_connections.py --connections 10000 [--tree /tmp/before]
    python bench/idle_connections.py --connections 10000 --burst

`--burst` measures the other way (issue 13's): all N connections are opened
first, then every one sends its POST before any answer is read, so that
all N bodies are in flight together; the figure is the RSS growth over the
idle process (no warm-up round) once all are answered, and its peak
(``VmHWM``) is printed beside it.

`--tree DIR` runs the service from another checkout (its ``ingest`` package
first on PYTHONPATH), to compare a change with the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BODY = b'{"name":"idle","value":1}'
REQUEST = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_connections(port: int, count: int) -> tuple[list[socket.socket], int]:
    """`count` connections that each had one exchange and stay open; and how many got 202."""
    sockets = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(REQUEST)
        sockets.append(client)
    return sockets, read_answers(sockets)


def read_answers(sockets: list[socket.socket]) -> int:
    """Read each socket's answer; how many were 202."""
    answered = 0
    for client in sockets:
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            data += client.recv(4096)
        answered += data.startswith(b"HTTP/1.1 202")
    return answered


def burst(port: int, count: int) -> tuple[list[socket.socket], int]:
    """`count` connections opened first, then all their requests sent, then all answers read."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for client in sockets:
        client.sendall(REQUEST)
    return sockets, read_answers(sockets)


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--tree", default=None, help="checkout directory to run the service from")
    parser.add_argument("--burst", action="store_true", help="all requests in flight together, no warm-up")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.tree:
        env["PYTHONPATH"] = os.path.abspath(args.tree)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, hard)), hard))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="ingest-idle-")
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            "prlimit",
            f"--nofile={wanted}",
            twistd,
            "-n",
            "--pidfile=",
            "ingest",
            "--port",
            f"tcp:{port}:interface=127.0.0.1:backlog=1024",
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        cold = rss_kib(server.pid)
        if args.burst:
            sockets, answered = burst(port, args.connections)
            time.sleep(1)
            after = rss_kib(server.pid)
            stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5))
            print(
                f"burst: answered 202: {answered} of {args.connections}, "
                f"open per /stats: {stats['connections']['open'] - 1}, RSS {cold} -> {after} KiB "
                f"(peak {peak_kib(server.pid)} KiB), "
                f"{(after - cold) * 1024 / args.connections:.0f} bytes per connection"
            )
            for client in sockets:
                client.close()
            return
        sockets, answered = open_connections(port, args.connections)
        time.sleep(1)
        first = rss_kib(server.pid)
        print(
            f"first round: RSS {cold} -> {first} KiB with {args.connections} open, answered 202: {answered}, "
            f"{(first - cold) * 1024 / args.connections:.0f} bytes per connection (allocator growth included)"
        )
        for client in sockets:
            client.close()
        time.sleep(2)
        before = rss_kib(server.pid)
        sockets, answered = open_connections(port, args.connections)
        time.sleep(1)
        after = rss_kib(server.pid)
        stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5))
        print(f"after closing them: {before} KiB (the allocator keeps what it grew)")
        print(
            f"second round: answered 202: {answered}, "
            f"open per /stats: {stats['connections']['open'] - 1}, "
            f"RSS {before} -> {after} KiB, "
            f"{(after - before) * 1024 / args.connections:.0f} bytes per connection"
        )
        for client in sockets:
            client.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
