"""Reliability end to end: `twistd -n ingest` in a subprocess, killed, stopped, starved of disk.

What PRODUCT.md promises under "Storage" and "Errors", held against the
real service: real processes, real sockets on 127.0.0.1, real files (and a
real full filesystem: a small tmpfs, which needs root).

Every posted sample has a unique name, so each one a 2xx acknowledged can
be looked for on disk afterwards.  The load and disk tests print a line of
figures (acked vs found); ``pytest -s`` shows it.

Cost: each test runs for a few seconds; the module takes about 10 seconds
on a 2-core machine.  Clients are blocking (threads, ``http.client`` for the
load, `tests.http_answers` on a socket otherwise): the service under test is
the asynchronous part.  Nothing depends on the machine's speed: a load
runs until each of its connections has had `ACKED_BEFORE_ACTION` requests
acknowledged, then the kill or SIGTERM comes, and the load goes on until
the service is gone.  Every wait is a poll with a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers_twistd import self_signed, start_twistd, temp_cwd
from tests.http_answers import Answer, AnswerStream
from tests.polling import block_until
from tests.segments import read_segments

HOST = "127.0.0.1"
LOCAL = f"tcp:0:interface={HOST}"
JSON = {"Content-Type": "application/json"}
ACKED_BEFORE_ACTION = 20
"""Requests acked on each connection of a load before the kill or SIGTERM, which so comes in its middle."""
MAX_LOAD_REQUESTS = 100_000
"""Bounds a load's connection: the load ends when the service does, or at this count."""
JOIN_TIMEOUT = 20.0
TORN_LINE = b'{"name":"torn.by.test","val'
MAX_FILL_REQUESTS = 1000
"""Bounds the loop that fills the disk, then the buffer (256 KiB + 2,000 samples of about 70 bytes)."""


def batch(names: Iterable[str], value: float) -> bytes:
    return json.dumps([{"name": name, "value": value} for name in names]).encode()


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    """One request on a new connection, which the service closes after the answer (``Connection: close``)."""
    fields = {"Host": HOST, "Connection": "close", **(headers or {})}
    if body is not None:
        fields["Content-Length"] = str(len(body))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        [answer] = AnswerStream(connection).receive_all(head_request=method == "HEAD")
    return answer


class Poster(threading.Thread):
    """One client on one keep-alive connection, posting batches of uniquely named samples.

    It posts until `stop` is called, `max_requests` were sent, or the
    connection fails (the server was killed or closed it while stopping):
    a failed request is not retried, and its samples count as not acked.
    """

    def __init__(self, port: int, label: str, size: int, max_requests: int = MAX_LOAD_REQUESTS) -> None:
        super().__init__(name=f"poster-{label}", daemon=True)
        self.port = port
        self.label = label
        self.size = size
        self.max_requests = max_requests
        self.acked: list[str] = []
        self.acked_at: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.ended_by = "stop"
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Send no further request."""
        self._stopping.set()

    def run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            for number in range(self.max_requests):
                if self._stopping.is_set():
                    return
                names = [f"{self.label}.{number}.{index}" for index in range(self.size)]
                connection.request("POST", "/metrics", batch(names, number), JSON)
                response = connection.getresponse()
                response.read()
                self.statuses[response.status] += 1
                if 200 <= response.status < 300:
                    self.acked += names
                    self.acked_at.append(time.monotonic())
            self.ended_by = "max_requests"
        except (OSError, http.client.HTTPException) as error:
            self.ended_by = type(error).__name__
        finally:
            connection.close()


def run_posters(posters: Sequence[Poster], action: Callable[[], Any]) -> Any:
    """Start the posters; once each has had `ACKED_BEFORE_ACTION` requests acked, call `action()`; join them.

    The posters go on posting while `action` runs, and stop after it.
    """
    for poster in posters:
        poster.start()
    try:
        block_until(
            lambda: all(
                len(poster.acked_at) >= ACKED_BEFORE_ACTION or not poster.is_alive() for poster in posters
            ),
            f"{ACKED_BEFORE_ACTION} requests acknowledged on each of {len(posters)} connections",
        )
        running = all(poster.is_alive() for poster in posters)
        result = action()
    finally:
        for poster in posters:
            poster.stop()
        for poster in posters:
            poster.join(JOIN_TIMEOUT)
    stuck = [poster.name for poster in posters if poster.is_alive()]
    if stuck:
        raise AssertionError(f"clients still running {JOIN_TIMEOUT} s after the action: {stuck}")
    if not running:
        raise AssertionError(
            "a client ended before the action, so it did not happen under load: "
            f"{[(poster.name, poster.ended_by, dict(poster.statuses)) for poster in posters]}"
        )
    return result


def tear_tail(directory: str) -> bool:
    """Make sure the newest segment ends in a torn line; True if it already did.

    ``kill -9`` tears a line only when it lands inside a ``write`` call, which
    is rare; when it did not, this appends what such a kill leaves (part of
    a line), so the restart's repair is always exercised.
    """
    newest = os.path.join(directory, sorted(os.listdir(directory))[-1])
    with open(newest, "rb") as segment:
        segment.seek(0, os.SEEK_END)
        if segment.tell():
            segment.seek(-1, os.SEEK_END)
            if segment.read(1) != b"\n":
                return True
    with open(newest, "ab") as segment:
        segment.write(TORN_LINE)
    return False


class ReliabilityTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = temp_cwd(self)

    def assert_stored(self, what: str, acked: Sequence[str], data_dir: str, detail: str = "") -> Counter[str]:
        """Every acked name is on disk exactly once; prints acked vs found.  Returns the stored names."""
        stored = Counter(sample["name"] for sample in read_segments(data_dir))
        missing = [name for name in acked if name not in stored]
        duplicated = sorted(name for name, count in stored.items() if count > 1)
        print(
            f"\n{what}: acked {len(acked)}, found {len(acked) - len(missing)} of them on disk "
            f"({sum(stored.values())} samples stored){detail}"
        )
        self.assertEqual(missing[:20], [], f"{len(missing)} acknowledged samples are not on disk")
        self.assertEqual(duplicated[:20], [], "samples stored more than once")
        return stored

    def test_kill_9_loses_nothing_acknowledged_in_durable_mode(self) -> None:
        """--ack durable: a sample answered 2xx is on disk, so kill -9 mid-load loses none of them.

        The restart on the same directory cuts the torn last line and logs it.
        """
        data_dir = os.path.join(self.cwd, "data")
        arguments = ("--port", LOCAL, "--data-dir", data_dir, "--ack", "durable", "--flush-interval", "0.05")
        service = start_twistd(self, self.cwd, *arguments)
        posters = [Poster(service.port, f"k{n}", 20) for n in range(8)]

        status = run_posters(posters, service.kill)

        self.assertEqual(status, -signal.SIGKILL)
        acked = [name for poster in posters for name in poster.acked]
        self.assertGreater(len(acked), 100, "the load got too few answers to mean anything")
        torn_by_kill = tear_tail(data_dir)

        restarted = start_twistd(self, self.cwd, *arguments, log_name="restart.out")
        self.assertEqual(restarted.stop(), -signal.SIGTERM, restarted.log())
        self.assertIn("cut a torn last line", restarted.log())
        ended = Counter(poster.ended_by for poster in posters)
        stored = self.assert_stored(
            "durable, kill -9 under load",
            acked,
            data_dir,
            f"; kill tore a line itself: {torn_by_kill}; clients ended by {dict(ended)}",
        )
        self.assertNotIn("torn.by.test", stored)

    def test_sigterm_under_load_stores_every_acknowledged_sample(self) -> None:
        """Buffered mode: SIGTERM under load from 16 connections answers, flushes and exits as -SIGTERM.

        Every sample answered 2xx, including those answered while stopping, is on disk afterwards.
        """
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(self, self.cwd, "--port", LOCAL, "--data-dir", data_dir)
        posters = [Poster(service.port, f"t{n}", 20) for n in range(16)]
        signalled: list[float] = []

        def terminate() -> int:
            signalled.append(time.monotonic())
            status = service.stop(signal.SIGTERM)
            signalled.append(time.monotonic())
            return status

        status = run_posters(posters, terminate)

        self.assertEqual(status, -signal.SIGTERM, service.log())
        stopping = signalled[1] - signalled[0]
        self.assertNotIn("shutdown: aborting", service.log(), "the drain had to abort a connection")
        self.assertIn("Server Shut Down", service.log())
        acked = [name for poster in posters for name in poster.acked]
        self.assertGreater(len(acked), 100, "the load got too few answers to mean anything")
        late = sum(at >= signalled[0] for poster in posters for at in poster.acked_at)
        ended = Counter(poster.ended_by for poster in posters)
        self.assert_stored(
            "buffered, SIGTERM under load",
            acked,
            data_dir,
            f"; requests acked after SIGTERM: {late}; stopped in {stopping:.2f} s; "
            f"clients ended by {dict(ended)}",
        )

    def test_sigterm_answers_a_request_whose_body_is_arriving(self) -> None:
        """A request whose body is half sent at SIGTERM is read to its end, answered 202 and stored.

        Shutdown does not wait out the drain's grace for it, nor abort it: the connection ends in an
        orderly close, where an abort would reset it.
        """
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(self, self.cwd, "--port", LOCAL, "--data-dir", data_dir)
        body = batch(["half.sent"], 7)
        head = (
            b"POST /metrics HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        with socket.create_connection((HOST, service.port), timeout=10) as client:
            stream = AnswerStream(client)
            client.sendall(head)
            # 100 Continue: the service has the head and is reading the body.
            self.assertEqual(stream.next_answer().status, 100)
            client.sendall(body[:5])
            service.process.send_signal(signal.SIGTERM)
            block_until(
                lambda: f"Port {service.port} Closed" in service.log(), "the service beginning to stop"
            )
            client.sendall(body[5:])
            # To the close: an aborted connection (the drain's grace run out) raises ConnectionResetError.
            answers = stream.receive_all()
        status = service.process.wait(timeout=30)

        self.assertEqual([(a.status, a.body) for a in answers], [(202, b'{"accepted":1}')])
        self.assertEqual(answers[0].headers[b"connection"], b"close")
        self.assertEqual(status, -signal.SIGTERM, service.log())
        self.assertEqual([s["name"] for s in read_segments(data_dir)], ["half.sent"])

    def test_full_disk_keeps_data_in_memory_and_recovers(self) -> None:
        """A full disk: /health turns 503 naming it, requests get 202 while the buffer has room, then 503.

        With Retry-After, and a refused request stores nothing.  Once space is
        freed the service recovers by itself: /health is 200 again and every
        sample answered 202 is on disk after SIGTERM, once.
        """
        disk = os.path.join(self.cwd, "disk")
        os.mkdir(disk)
        try:
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", disk], capture_output=True, timeout=30
            )
        except OSError as error:
            self.skipTest(f"cannot run mount: {error}")
        if mounted.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}")
        self.addCleanup(subprocess.run, ["umount", disk], capture_output=True, timeout=30)
        filler = os.path.join(disk, "filler")
        with open(filler, "wb") as filling:
            filling.write(b"\0" * 256 * 1024)
        data_dir = os.path.join(disk, "data")
        # --min-free 0: this test is about a disk that fills to ENOSPC, not about stopping before it.
        service = start_twistd(
            self,
            self.cwd,
            *("--port", LOCAL, "--data-dir", data_dir, "--max-buffer", "2000", "--flush-interval", "0.05"),
            *("--min-free", "0"),
        )
        port = service.port
        accepted: list[str] = []
        refused: list[str] = []
        failing_health: Answer | None = None
        accepted_while_failing = 0
        refusals: list[Answer] = []

        for number in range(MAX_FILL_REQUESTS):
            names = [f"d.{number}.{index}" for index in range(20)]
            answer = request(port, "POST", "/metrics", batch(names, number), JSON)
            if answer.status == 202:
                accepted += names
                accepted_while_failing += failing_health is not None
            elif answer.status == 503:
                refused += names
                refusals.append(answer)
                if len(refusals) == 3:
                    break
            else:
                self.fail(f"POST answered {answer}")
            if failing_health is None:
                # The first /health naming the storage: it may say "saturated" first, when the
                # requests fill the buffer faster than a flush fails.
                health = request(port, "GET", "/health")
                if health.status == 503 and "storage failing" in health.body.decode():
                    failing_health = health
        else:
            self.fail(f"no 503 after {MAX_FILL_REQUESTS} requests; {len(accepted)} samples accepted")

        self.assertIsNotNone(failing_health, "/health never named the storage while the disk was full")
        assert failing_health is not None
        reasons = failing_health.json()["reasons"]
        self.assertTrue(
            any(r.startswith("storage failing") and "No space left on device" in r for r in reasons), reasons
        )
        self.assertGreater(
            accepted_while_failing, 0, "no request was accepted into memory while storage was failing"
        )
        for refusal in refusals:
            self.assertEqual(refusal.headers.get(b"retry-after"), b"1", refusal)
            self.assertEqual(refusal.json()["error"], "buffer full", refusal)
        full_health = request(port, "GET", "/health")
        self.assertEqual(full_health.status, 503)
        self.assertIn("buffer full", full_health.json()["reasons"])
        self.assertEqual(full_health.json()["buffer"]["depth"], 2000)

        os.remove(filler)
        freed = time.monotonic()
        block_until(lambda: request(port, "GET", "/health").status == 200, "/health 200 after freeing space")
        recovered_in = time.monotonic() - freed
        names = [f"d.after.{index}" for index in range(100)]
        self.assertEqual(request(port, "POST", "/metrics", batch(names, -1), JSON).status, 202)
        accepted += names

        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
        self.assertIn("No space left on device", service.log())
        stored = self.assert_stored(
            "full disk, then freed",
            accepted,
            data_dir,
            f"; 202 while storage failing: {accepted_while_failing} requests; "
            f"503: {len(refusals)} requests; /health 200 again {recovered_in:.2f} s after freeing space",
        )
        self.assertEqual([name for name in refused if name in stored][:20], [], "refused samples were stored")

    def test_stop_that_loses_samples_exits_failing(self) -> None:
        """A stop that gives up on unwritten samples exits with status 74 (EX_IOERR), not by SIGTERM.

        The disk fails through a file size limit (``RLIMIT_FSIZE``: writes
        past it fail with EFBIG; Python ignores SIGXFSZ), so no root is
        needed: the service's log stays under it, the one batch of 2,000
        samples does not.  With a 60 s flush interval nothing is written
        before the stop; the stop's flush fails, its retries fail, and the
        process ends with ``EXIT_DATA_LOST``, which systemd reports as a
        failure.  A clean stop of the same service ends killed by SIGTERM.

        (Before: the process re-raised SIGTERM, as after a clean stop.)
        """
        import resource

        from ingest.workers import EXIT_DATA_LOST

        def small_files() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

        data_dir = os.path.join(self.cwd, "data")
        arguments = ("--port", LOCAL, "--data-dir", data_dir, "--flush-interval", "60")
        service = start_twistd(self, self.cwd, *arguments, preexec=small_files)
        names = [f"lost.{index}.with.a.longer.name.to.pass.the.limit" for index in range(2000)]
        self.assertEqual(request(service.port, "POST", "/metrics", batch(names, 1), JSON).status, 202)
        self.assertEqual(service.stop(), EXIT_DATA_LOST, service.log())
        log = service.log()
        self.assertIn("shutting down with 2000 samples unwritten", log)
        self.assertIn(f"exiting with status {EXIT_DATA_LOST}: the stop may have lost data", log)

        clean = start_twistd(self, self.cwd, *arguments, log_name="clean.out", preexec=small_files)
        self.assertEqual(request(clean.port, "POST", "/metrics", batch(["kept"], 1), JSON).status, 202)
        self.assertEqual(clean.stop(), -signal.SIGTERM, clean.log())

    def test_tls_endpoint(self) -> None:
        """--port ssl:0:... serves HTTPS: a sample posted over TLS gets 202 and is on disk after SIGTERM."""
        key, certificate = self_signed(self.cwd)
        data_dir = os.path.join(self.cwd, "data")
        endpoint = f"ssl:0:privateKey={key}:certKey={certificate}:interface={HOST}"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        service = start_twistd(self, self.cwd, "--port", endpoint, "--data-dir", data_dir, tls=context)

        connection = http.client.HTTPSConnection(HOST, service.port, timeout=10, context=context)
        connection.request("POST", "/metrics", batch(["tls.sample"], 1.5), JSON)
        response = connection.getresponse()
        body = response.read()
        sock = connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        version = sock.version()
        connection.close()

        self.assertEqual((response.status, json.loads(body)), (202, {"accepted": 1}))
        self.assertTrue(version and version.startswith("TLS"), version)
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
        stored = read_segments(data_dir)
        self.assertEqual([(s["name"], s["value"]) for s in stored], [("tls.sample", 1.5)])

    def test_auth_tokens(self) -> None:
        """--auth-tokens: no token is 401 with WWW-Authenticate; Bearer and Token schemes are accepted.

        /ping and /health need no token; the log of a rejected request names
        the client's address and never the token.
        """
        tokens = os.path.join(self.cwd, "tokens")
        with open(tokens, "w") as tokens_file:
            tokens_file.write("secret1 collector-a\n")
        data_dir = os.path.join(self.cwd, "data")
        service = start_twistd(
            self, self.cwd, "--port", LOCAL, "--data-dir", data_dir, "--auth-tokens", tokens
        )
        port = service.port

        def post(name: str, authorization: str | None) -> Answer:
            headers = dict(JSON)
            if authorization is not None:
                headers["Authorization"] = authorization
            return request(port, "POST", "/metrics", batch([name], 1), headers)

        refused = post("auth.none", None)
        self.assertEqual(refused.status, 401, refused)
        self.assertEqual(refused.headers.get(b"www-authenticate"), b'Bearer realm="ingest"')
        self.assertEqual(refused.json()["error"], "unauthorized")
        self.assertEqual(post("auth.wrong", "Bearer secret1-but-wrong").status, 401)
        self.assertEqual(post("auth.bearer", "Bearer secret1").status, 202)
        self.assertEqual(post("auth.token", "Token secret1").status, 202)
        self.assertEqual(request(port, "GET", "/ping").status, 204)
        self.assertEqual(request(port, "GET", "/health").status, 200)

        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
        log = service.log()
        rejections = [line for line in log.splitlines() if "rejected request" in line]
        self.assertEqual(len(rejections), 2, log)
        for line in rejections:
            self.assertIn(f"from {HOST}: 401", line)
        self.assertNotIn("secret1", log)
        stored = sorted(sample["name"] for sample in read_segments(data_dir))
        self.assertEqual(stored, ["auth.bearer", "auth.token"])
