"""Connections as real clients make them, against `twistd -n ingest`: pipelines cut where the hang was, TLS.

Real sockets on 127.0.0.1 and real clients: a raw socket for the
pipeline, curl and Python's `ssl` (both offering ALPN, as Go's HTTP client,
browsers and every agent do) for TLS.  curl comes from the system
(``.ci/run`` installs it); without it the curl test is skipped with the
reason.  Every wait is a socket timeout or a poll with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import SAMPLE, get, post
from tests.helpers_twistd import self_signed, start_twistd, temp_cwd
from tests.http_answers import AnswerStream, parse_answers
from tests.segments import read_segments

HOST = "127.0.0.1"
TIMEOUT = 20.0


def tls_context(alpn: list[str] | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


class PipelineTests(SynchronousTestCase):
    def test_head_alone_after_a_held_request(self) -> None:
        """Issue 10, as reported: POST + GET /ping + only the head of a second POST on one keep-alive
        connection, that POST's body later.  All three answers arrive (202, 204, 202), both samples are
        stored, and SIGTERM stops the service without waiting for a connection to be aborted.

        (Before: the GET stayed held behind the second POST's unfinished head, the POST behind the GET:
        one answer came, the connection hung, and shutdown ran out its drain grace.)"""
        cwd = temp_cwd(self)
        data_dir = os.path.join(cwd, "data")
        service = start_twistd(self, cwd, "--port", f"tcp:0:interface={HOST}", "--data-dir", data_dir)
        second = post(b"/metrics", SAMPLE)
        head, body = second[: -len(SAMPLE)], SAMPLE
        with socket.create_connection((HOST, service.port), timeout=TIMEOUT) as connection:
            answers = AnswerStream(connection)
            connection.sendall(post(b"/metrics", SAMPLE) + get(b"/ping") + head)
            first = answers.receive(2)
            connection.sendall(body)
            last = answers.receive(1)
        self.assertEqual([a.status for a in first + last], [202, 204, 202])
        self.assertEqual(service.stop(), -signal.SIGTERM, service.log())
        self.assertNotIn("aborting", service.log())
        self.assertEqual([s["name"] for s in read_segments(data_dir)], ["cpu.load", "cpu.load"])


class TlsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = temp_cwd(self)
        key, certificate = self_signed(self.cwd)
        self.data_dir = os.path.join(self.cwd, "data")
        endpoint = f"ssl:0:privateKey={key}:certKey={certificate}:interface={HOST}"
        self.service = start_twistd(
            self, self.cwd, "--port", endpoint, "--data-dir", self.data_dir, tls=tls_context(None)
        )

    def exchange(self, alpn: list[str] | None) -> tuple[str | None, list[int]]:
        """A POST and a GET on one TLS connection offering `alpn`: the protocol chosen, the statuses."""
        raw = socket.create_connection((HOST, self.service.port), timeout=TIMEOUT)
        with tls_context(alpn).wrap_socket(raw, server_hostname=HOST) as connection:
            connection.sendall(post(b"/metrics", SAMPLE, b"Content-Type: application/json") + get(b"/ping"))
            answers = AnswerStream(connection).receive(2)  # type: ignore[arg-type]
            return connection.selected_alpn_protocol(), [a.status for a in answers]

    def test_alpn_client_gets_http11(self) -> None:
        """A client offering h2 and http/1.1 (curl's, Go's and browsers' offer) is answered http/1.1 and
        served; one offering nothing is served too.

        (Before: every handshake that offered ALPN failed with an internal-error alert.)"""
        self.assertEqual(self.exchange(["h2", "http/1.1"]), ("http/1.1", [202, 204]))
        self.assertEqual(self.exchange(["http/1.1"]), ("http/1.1", [202, 204]))
        self.assertEqual(self.exchange(None), (None, [202, 204]))

    def test_h2_only_client_is_refused_in_the_handshake(self) -> None:
        """A client that speaks only h2 fails the handshake (no protocol in common), and the service
        goes on serving others."""
        self.assertRaises(ssl.SSLError, self.exchange, ["h2"])
        self.assertEqual(self.exchange(["http/1.1"]), ("http/1.1", [202, 204]))

    def test_curl(self) -> None:
        """curl, with its defaults (ALPN h2 and http/1.1): the sample is accepted and stored."""
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed (.ci/run installs it)")
        url = f"https://{HOST}:{self.service.port}/metrics"
        result = subprocess.run(
            [curl, "-sS", "-k", "-i", "--max-time", str(TIMEOUT), "-d", '{"name":"curl.tls","value":1}', url],
            capture_output=True,
            timeout=TIMEOUT + 5,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [answer] = parse_answers(result.stdout)
        self.assertEqual((answer.version, answer.status, answer.json()), (b"HTTP/1.1", 202, {"accepted": 1}))
        self.assertEqual(self.service.stop(), -signal.SIGTERM, self.service.log())
        self.assertEqual([s["name"] for s in read_segments(self.data_dir)], ["curl.tls"])
        self.assertNotIn("Traceback", self.service.log())
