"""Routes that answer from state: /health, /stats, /ping."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import SAMPLE, Stack, get, parse_answers, post


class ApiTests(SynchronousTestCase):
    def ask(self, stack: Stack, request: bytes) -> list:
        channel, transport = stack.connect()
        channel.dataReceived(request)
        stack.settle()
        return parse_answers(transport.value())

    def test_ping(self) -> None:
        """GET /ping answers 204 with no body."""
        [answer] = self.ask(Stack(), get(b"/ping"))
        self.assertEqual((answer.status, answer.body), (204, b""))

    def test_health_ok(self) -> None:
        """/health is 200 JSON while storage works and the buffer has room."""
        [answer] = self.ask(Stack(), get(b"/health"))
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json()["status"], "ok")

    def test_health_storage_failing(self) -> None:
        """/health is 503 JSON naming the storage problem."""
        stack = Stack(storage_problem=lambda: "[Errno 28] No space left on device")
        [answer] = self.ask(stack, get(b"/health"))
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json()["status"], "unhealthy")
        self.assertIn("No space left", answer.json()["reasons"][0])

    def test_health_buffer_full(self) -> None:
        """/health is 503 when the buffer is full."""
        stack = Stack(inline=True, capacity=1)
        answers = self.ask(stack, post(b"/metrics", SAMPLE) + get(b"/health"))
        self.assertEqual([a.status for a in answers], [202, 503])
        self.assertEqual(answers[1].json()["reasons"], ["buffer full"])

    def test_stats_counts(self) -> None:
        """/stats reports connections, requests by status, samples, buffer depth and flush figures."""
        stack = Stack(inline=True)
        answers = self.ask(
            stack,
            post(b"/metrics", b"[" + SAMPLE + b',{"name":"x"}]') + get(b"/nowhere") + get(b"/stats"),
        )
        stats = answers[-1].json()
        self.assertEqual(stats["connections"], {"open": 1, "total": 1})
        self.assertEqual(stats["requests"]["by_status"], {"400": 1, "404": 1})
        self.assertEqual(stats["samples"], {"accepted": 1, "rejected": 1})
        self.assertEqual(stats["buffer"], {"depth": 1, "capacity": 1000})
        for key in ("flushes", "flush_errors", "bytes_written", "uptime_seconds", "parse_queue"):
            self.assertIn(key, stats)
