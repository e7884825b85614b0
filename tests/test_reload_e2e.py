"""End to end: SIGHUP to a running `twistd -n ingest` reloads tap.cfg and the token file."""

from __future__ import annotations

import http.client
import json
import os
import signal

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers_twistd import TWISTD, Twistd, start_twistd, temp_cwd
from tests.polling import block_until

LOCALHOST = "tcp:0:interface=127.0.0.1"


def post(port: int, token: str, samples: int = 1) -> tuple[int, int | None]:
    """POST `samples` samples with `token` over a new connection: the status, and which worker answered
    a ``GET /stats`` after it on the same connection (None when the post was refused)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        body = json.dumps([{"name": "reload.test", "value": i} for i in range(samples)])
        connection.request("POST", "/metrics", body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            return response.status, None
        connection.request("GET", "/stats", headers=headers)
        stats = json.loads(connection.getresponse().read())
        return response.status, stats.get("worker")
    finally:
        connection.close()


class ReloadEndToEndTests(SynchronousTestCase):
    def setUp(self) -> None:
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)
        self.write("tokens", "old-token client-a\n")
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\nflush-interval = 0.05\n")

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.cwd, name), "w", encoding="utf-8") as file:
            file.write(text)

    def hangup(self, service: Twistd, line: str, count: int = 1) -> None:
        """SIGHUP, then wait until the log holds `line` `count` times more than before."""
        before = service.log().count(line)
        service.process.send_signal(signal.SIGHUP)
        block_until(lambda: service.log().count(line) >= before + count, f"{line!r} logged", timeout=20)

    def test_tokens_and_rate_limit_change(self) -> None:
        """New tokens and rate limit take effect at once; a change of the data directory is logged as
        needing a restart and ignored; one line says what changed."""
        service = start_twistd(self, self.cwd, "--port", LOCALHOST, "--threads", "0")
        self.assertEqual(post(service.port, "old-token", 2)[0], 202)
        self.assertEqual(post(service.port, "old-token", 2)[0], 202)
        self.assertEqual(post(service.port, "new-token")[0], 401)

        self.write("tokens", "new-token client-b\n")
        self.write(
            "tap.cfg",
            "[ingest]\nauth-tokens = tokens\nflush-interval = 0.05\nrate-limit = 0.001\nrate-burst = 2\n"
            "data-dir = ./elsewhere\nthreads = 4\n",
        )
        self.hangup(service, "reload: changed")
        log = service.log()
        self.assertIn(
            "reload: changed rate-limit 0.0 -> 0.001, rate-burst 0.0 -> 2.0, "
            "auth-tokens (the file's tokens: 1 -> 1)",
            log,
        )
        # --threads is on the command line: it wins over tap.cfg, as at start, so it has not changed.
        self.assertIn("reload: changed in tap.cfg but needs a restart, so ignored: data-dir\n", log)
        self.assertEqual(post(service.port, "old-token")[0], 401)
        self.assertEqual(post(service.port, "new-token", 2)[0], 202)
        self.assertEqual(post(service.port, "new-token", 2)[0], 429, "a bucket of 2, nearly never refilled")

        self.hangup(service, "reload: nothing changed")
        metrics = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        metrics.request("GET", "/metrics", headers={"Authorization": "Bearer new-token"})
        text = metrics.getresponse().read().decode()
        metrics.close()
        self.assertIn('ingest_reloads_total{result="ok"} 2.0', text)
        self.assertIn('ingest_reloads_total{result="failed"} 0.0', text)
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "elsewhere")))

    def test_bad_files_keep_the_old_settings(self) -> None:
        """A config file with a bad value, or a token file gone, fails the reload: it says why, and the
        old tokens still work (and the new ones do not)."""
        service = start_twistd(self, self.cwd, "--port", LOCALHOST)
        self.write("tokens", "new-token client-b\n")
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\nrate-limit = fast\n")
        self.hangup(service, "reload failed")
        self.assertIn(
            "reload failed, every setting kept as it was: --rate-limit: could not convert", service.log()
        )
        self.assertEqual(post(service.port, "old-token")[0], 202)
        self.assertEqual(post(service.port, "new-token")[0], 401)

        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\n")
        os.remove(os.path.join(self.cwd, "tokens"))
        self.hangup(service, "reload failed", 1)
        self.assertRegex(
            service.log(), r"reload failed, every setting kept as it was: --auth-tokens .*tokens: "
        )
        self.assertEqual(post(service.port, "old-token")[0], 202)
        self.assertNotIn("reload: changed", service.log())
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())

    def test_workers_each_reload(self) -> None:
        """Under ``--workers 2`` the supervisor passes SIGHUP on: both workers reload (each logs its line),
        and requests on the shared port, spread over both, take the new token and refuse the old."""
        service = start_twistd(self, self.cwd, "--port", LOCALHOST, "--workers", "2")
        self.write("tokens", "new-token client-b\n")
        self.hangup(service, "reload: changed auth-tokens", 3)  # the supervisor and both workers
        log = service.log()
        for worker in (1, 2):
            self.assertRegex(log, rf"\[worker {worker} [^]]*\] reload: changed auth-tokens")
        answered: set[int | None] = set()
        for _ in range(40):
            status, worker = post(service.port, "new-token")
            self.assertEqual(status, 202)
            answered.add(worker)
            self.assertEqual(post(service.port, "old-token")[0], 401)
        self.assertEqual(answered, {1, 2}, "both workers answered")
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
