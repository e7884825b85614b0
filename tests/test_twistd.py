"""End to end: `twistd -n ingest` as a user runs it, in a subprocess, with real HTTP and real files."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers_twistd import TWISTD, environment, start_twistd, temp_cwd
from tests.polling import block_until
from tests.segments import read_segments


def default_interrupts() -> None:
    """In the child: SIGINT's default action, whatever the test runner's was.  A runner started in the
    background by a shell without job control (``cmd &`` in a script) ignores SIGINT, and a process
    inherits an ignored signal: twistd would then never see the SIGINT the test sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TwistdTests(SynchronousTestCase):
    def setUp(self) -> None:
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)

    def test_serve_persist_and_stop(self) -> None:
        """Post over one keep-alive connection, find the samples on disk, stop cleanly on SIGTERM."""
        data_dir = os.path.join(self.cwd, "store")
        os.makedirs(data_dir)
        with open(os.path.join(data_dir, "segment-0000000000000000001.ndjson"), "wb") as torn:
            torn.write(b'{"name":"old","value":1,"timestamp":1,"tags":{}}\n{"name":"tor')
        with open(os.path.join(self.cwd, "tap.cfg"), "w") as config:
            config.write("[ingest]\ndata-dir = ./store\nflush-interval = 0.05\nport = 1\n")
        service = start_twistd(self, self.cwd, "--port", "tcp:0:interface=127.0.0.1")
        process, port = service.process, service.port

        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        sent = [
            ("application/x-www-form-urlencoded", b'{"name":"cpu.load","value":0.42,"tags":{"host":"a"}}', 1),
            (
                "application/json",
                b'[{"name":"m1","value":1,"timestamp":1700000000},'
                b'{"name":"m2","value":-2.5,"timestamp":1700000000.25}]',
                2,
            ),
            (
                "application/x-ndjson",
                b'{"name":"n1","value":10}\n{"name":"n2","value":1e-3,"tags":{"k":"v"}}\n',
                2,
            ),
        ]
        sockets = set()
        for content_type, body, count in sent:
            connection.request("POST", "/metrics", body, {"Content-Type": content_type})
            sockets.add(id(connection.sock))
            response = connection.getresponse()
            self.assertEqual((response.status, json.loads(response.read())), (202, {"accepted": count}))
        for path, status in (("/ping", 204), ("/health", 200), ("/stats", 200)):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            self.assertEqual(response.status, status, path)
        self.assertEqual(len(sockets), 1, "all requests went over one keep-alive connection")

        block_until(lambda: len(read_segments(data_dir)) >= 6, "the samples flushed while running")
        self.assertEqual(len(read_segments(data_dir)), 6, "flushed while running")

        connection.close()
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=30), -signal.SIGTERM, service.log())
        log = service.log()
        self.assertIn("Server Shut Down", log)
        self.assertIn("cut a torn last line", log)

        stored = read_segments(data_dir)
        self.assertEqual([s["name"] for s in stored], ["old", "cpu.load", "m1", "m2", "n1", "n2"])
        for sample in stored:
            self.assertEqual(sorted(sample), ["name", "tags", "timestamp", "value"])
            self.assertIsInstance(sample["timestamp"], int)
        by_name = {s["name"]: s for s in stored}
        self.assertEqual(by_name["cpu.load"]["value"], 0.42)
        self.assertEqual(by_name["cpu.load"]["tags"], {"host": "a"})
        self.assertEqual(by_name["m1"]["timestamp"], 1700000000 * 10**9)
        self.assertEqual(by_name["m2"]["timestamp"], 1700000000250000000)
        self.assertEqual(by_name["m2"]["value"], -2.5)
        self.assertEqual(by_name["n2"]["value"], 0.001)
        self.assertEqual(by_name["n2"]["tags"], {"k": "v"})

    def test_sigint_flushes(self) -> None:
        """SIGINT, too, answers, flushes and shuts down cleanly: nothing acknowledged is lost."""
        service = start_twistd(
            self,
            self.cwd,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--flush-interval",
            "3600",
            preexec=default_interrupts,
        )
        process, port = service.process, service.port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = json.dumps([{"name": f"s{i}", "value": i} for i in range(500)])
        connection.request("POST", "/metrics", body, {"Content-Type": "application/json"})
        self.assertEqual(connection.getresponse().status, 202)
        connection.close()
        process.send_signal(signal.SIGINT)
        self.assertEqual(process.wait(timeout=30), -signal.SIGINT, service.log())
        self.assertEqual(len(read_segments(os.path.join(self.cwd, "data"))), 500)

    def test_sighup_reloads_and_serves_on(self) -> None:
        """SIGHUP (a closed terminal, ``systemctl reload``) does not end the service: it reloads (here
        nothing changed, and says so) and keeps serving, and what it acknowledged before is still flushed
        at the stop."""
        service = start_twistd(
            self, self.cwd, "--port", "tcp:0:interface=127.0.0.1", "--flush-interval", "3600"
        )
        process, port = service.process, service.port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/metrics", json.dumps({"name": "before", "value": 1}))
        response = connection.getresponse()
        self.assertEqual((response.status, response.read()), (202, b'{"accepted":1}'))
        process.send_signal(signal.SIGHUP)
        connection.request("POST", "/metrics", json.dumps({"name": "after", "value": 2}))
        response = connection.getresponse()
        self.assertEqual((response.status, response.read()), (202, b'{"accepted":1}'), service.log())
        connection.close()
        self.assertIsNone(process.poll())
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(timeout=30), -signal.SIGTERM, service.log())
        self.assertIn("reload: nothing changed", service.log())
        names = sorted(sample["name"] for sample in read_segments(os.path.join(self.cwd, "data")))
        self.assertEqual(names, ["after", "before"])

    def test_version_is_ingests(self) -> None:
        """`twistd ingest --version` prints ingest's own version (with Twisted's and Python's) and exits 0.

        (Before: Twisted's version only, as `twistd --version` prints it.)"""
        from ingest import __version__

        result = subprocess.run(
            [TWISTD, "ingest", "--version"], cwd=self.cwd, env=environment(), capture_output=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.decode(), rf"^ingest {re.escape(__version__)} \(Twisted [0-9]")

    def test_help_lists_options(self) -> None:
        """`twistd ingest --help` shows the options of the service."""
        output = subprocess.run(
            [TWISTD, "ingest", "--help"], cwd=self.cwd, env=environment(), capture_output=True, timeout=60
        ).stdout.decode()
        for option in (
            "--port",
            "--data-dir",
            "--threads",
            "--flush-interval",
            "--max-buffer",
            "--max-body",
            "--idle-timeout",
            "--segment-bytes",
            "--config",
        ):
            self.assertIn(option, output)
