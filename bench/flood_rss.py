"""Flood `twistd -n ingest` and watch its memory: RSS before, peak during and after the flood.

    python bench/flood_rss.py                    # full disk (needs root to mount a tmpfs)
    python bench/flood_rss.py --disk normal      # a temporary directory on the usual disk

Not a test: it prints figures.  The service runs from this checkout (the
source tree first on ``PYTHONPATH``) with ``--max-buffer 200000``;
`--connections` keep-alive clients (asyncio, raw HTTP/1.1, one prebuilt
body of `--batch` samples each) post for `--seconds` while a sampler reads
``VmRSS`` from ``/proc/PID/status`` every 50 ms.  ``VmHWM`` (the kernel's own
high-water mark of RSS) is printed too, as the sampler can miss a spike.

The slow disk, honestly simulated (``--disk full``, the default): the data
directory is on a 64 MiB tmpfs filled to the last byte before the service
starts, so every write fails with ENOSPC, nothing leaves the buffer, and the
buffer fills to ``--max-buffer`` and stays full.  That is the worst case for
memory: a disk that is merely slow drains some of it.  After the flood the
filler is deleted, and RSS is read again once ``/health`` is 200 and the
buffer has drained (what the process keeps after recovery).

Clients send no new request after `--seconds`, and wait for the answers
owed.  A client whose request gets no answer within `--request-timeout`
seconds closes its connection and opens a new one, as HTTP clients with a
timeout do (Telegraf's default is 5 s): above its high mark the service
stops reading from the connections it has (carbon's backpressure), and
only new connections are read, to be answered 503 once the buffer is full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of `pid` in KiB from /proc/PID/status (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class Sampler(threading.Thread):
    """Reads VmRSS every `interval` seconds and keeps the highest value seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.stopping.wait(self.interval)


def fill_tmpfs(directory: str, size: str) -> str:
    """Mount a tmpfs of `size` on `directory` and fill it to ENOSPC; returns the filler's path."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", directory], check=True)
    filler = os.path.join(directory, "filler")
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as filling:
        try:
            while True:
                filling.write(block)
        except OSError:
            pass
    return filler


def start_service(cwd: str, data_dir: str, max_buffer: int) -> tuple[subprocess.Popen[bytes], int, str]:
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) or "twistd"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    log_path = os.path.join(cwd, "twistd.out")
    options = ["--data-dir", data_dir, "--max-buffer", str(max_buffer)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", "ingest", "--port", f"tcp:0:interface={HOST}", *options],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as log_file:
            match = re.search(r"ingest listening on .*port=(\d+)", log_file.read())
        if match:
            port = int(match.group(1))
            while time.monotonic() < deadline:
                try:
                    if asyncio.run(get(port, "/ping"))[0] == 204:
                        return process, port, log_path
                except OSError:
                    pass
                time.sleep(0.05)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the service did not start; see {log_path}")


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def get(port: int, path: str) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        status, body = await asyncio.wait_for(read_answer(reader), 10)
        return status, json.loads(body) if body else None
    finally:
        writer.close()


async def client(
    port: int, number: int, batch: int, until: float, timeout: float, counts: Counter[str]
) -> None:
    body = json.dumps([{"name": f"flood.c{number}.{index}", "value": index} for index in range(batch)])
    request = (
        f"POST /metrics HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            counts["connect errors"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < until:
                writer.write(request)
                status, _ = await asyncio.wait_for(read_answer(reader), timeout)
                counts[str(status)] += 1
        except TimeoutError:
            counts["unanswered, reconnected"] += 1
        except (OSError, asyncio.IncompleteReadError) as error:
            counts[type(error).__name__] += 1
        finally:
            writer.close()


async def flood(port: int, connections: int, batch: int, seconds: float, timeout: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(port, n, batch, until, timeout, counts) for n in range(connections)))
    return counts


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--disk", choices=["full", "normal"], default="full")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100, help="samples per POST")
    parser.add_argument("--max-buffer", type=int, default=200_000)
    parser.add_argument("--request-timeout", type=float, default=2.0)
    args = parser.parse_args()

    cwd = tempfile.mkdtemp(prefix="ingest-flood-")
    disk = os.path.join(cwd, "disk")
    os.mkdir(disk)
    filler = fill_tmpfs(disk, "64m") if args.disk == "full" else None
    process = None
    try:
        process, port, log_path = start_service(cwd, os.path.join(disk, "data"), args.max_buffer)
        pid = process.pid
        time.sleep(1.0)
        before = rss_kib(pid)
        sampler = Sampler(pid)
        sampler.start()
        started = time.monotonic()
        counts = asyncio.run(flood(port, args.connections, args.batch, args.seconds, args.request_timeout))
        elapsed = time.monotonic() - started
        sampler.stopping.set()
        sampler.join()
        time.sleep(2.0)
        after = rss_kib(pid)
        stats = asyncio.run(get(port, "/stats"))[1]
        health = asyncio.run(get(port, "/health"))

        print(
            f"disk: {args.disk}{' (64 MiB tmpfs filled to ENOSPC before start)' if filler else ''}; "
            f"{args.connections} connections, {args.batch} samples per POST, {elapsed:.1f} s, "
            f"--max-buffer {args.max_buffer}"
        )
        print(
            f"answers: 202={counts['202']} 503={counts['503']}; "
            f"other: { {key: count for key, count in counts.items() if key not in ('202', '503')} }"
        )
        print(f"RSS before: {mib(before)}")
        print(
            f"RSS peak during (sampled every 50 ms): {mib(sampler.peak)}; VmHWM: {mib(rss_kib(pid, 'VmHWM'))}"
        )
        print(f"RSS after (2 s idle): {mib(after)}")
        print(
            f"service: buffer depth {stats['buffer']['depth']} (high mark {stats['buffer']['high_mark']}), "
            f"samples accepted {stats['samples']['accepted']}, written {stats['samples']['written']}, "
            f"flush errors {stats['flush_errors']}; /health {health[0]}"
        )
        if filler is not None:
            os.remove(filler)
            freed = time.monotonic()
            while time.monotonic() - freed < 30:
                status, document = asyncio.run(get(port, "/health"))
                if status == 200 and document["buffer"]["depth"] == 0:
                    break
                time.sleep(0.1)
            print(
                f"RSS after freeing the disk and draining the buffer ({time.monotonic() - freed:.1f} s): "
                f"{mib(rss_kib(pid))}; /health {status}, depth {document['buffer']['depth']}"
            )
        process.send_signal(signal.SIGTERM)
        print(f"exit status {process.wait(timeout=60)}; log: {log_path}")
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if filler is not None:
            subprocess.run(["umount", disk], check=False)


if __name__ == "__main__":
    main()
