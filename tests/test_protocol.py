"""The HTTP channel on a StringTransport, a Clock and a memory pool."""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ingest.http11 import Limits
from ingest.protocol import HttpChannel
from tests.helpers import SAMPLE, Stack, get, parse_answers, post


class ExchangeTests(SynchronousTestCase):
    def test_post_whole_and_byte_by_byte(self) -> None:
        """A POST fed whole or one byte at a time gets the same 202 and stores the same sample."""
        for inline in (False, True):
            for bytewise in (False, True):
                stack = Stack(inline=inline)
                channel, transport = stack.connect()
                request = post(b"/metrics", SAMPLE, b"Content-Type: application/json")
                if bytewise:
                    for i in range(len(request)):
                        channel.dataReceived(request[i : i + 1])
                else:
                    channel.dataReceived(request)
                stack.settle()
                [answer] = parse_answers(transport.value())
                self.assertEqual((answer.status, answer.json()), (202, {"accepted": 1}))
                self.assertEqual(answer.headers[b"content-type"], b"application/json")
                [stored] = stack.stored()
                self.assertEqual(stored["name"], "cpu.load")
                self.assertEqual(stored["value"], 0.42)
                self.assertEqual(stored["tags"], {"host": "a"})
                self.assertEqual(stored["timestamp"], 1_700_000_000 * 10**9)
                self.assertFalse(transport.disconnecting)

    def test_pipelined_answers_in_order(self) -> None:
        """Answers leave in request order even when a later request is answered first."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(
            post(b"/metrics", SAMPLE)
            + get(b"/ping")
            + post(b"/metrics", b"[" + SAMPLE + b"," + SAMPLE + b"]")
            + get(b"/nowhere")
        )
        self.assertEqual(transport.value(), b"", "nothing may overtake the pending POST")
        stack.settle()
        statuses = [(a.status, a.body) for a in parse_answers(transport.value())]
        self.assertEqual([status for status, _ in statuses], [202, 204, 202, 404])
        self.assertEqual(statuses[2][1], b'{"accepted":2}')

    def test_one_pool_job_per_turn(self) -> None:
        """Bodies that arrive in one reactor turn travel to the pool as one job."""
        stack = Stack()
        connections = [stack.connect() for _ in range(5)]
        for channel, _ in connections:
            channel.dataReceived(post(b"/metrics", SAMPLE) * 3)
        stack.clock.advance(0)
        self.assertEqual(stack.pool.submitted, 1)
        stack.settle()
        for _, transport in connections:
            self.assertEqual([a.status for a in parse_answers(transport.value())], [202] * 3)
        self.assertEqual(len(stack.stored()), 15)

    def test_pipeline_limit_pauses_reading(self) -> None:
        """With max_pipeline exchanges open the channel stops reading, and resumes as answers leave."""
        stack = Stack(max_pipeline=4)
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE) * 10)
        self.assertEqual(transport.producerState, "paused")
        stack.clock.advance(0)
        self.assertEqual(stack.pool.run_all(), 1)
        self.assertEqual(stack.pool.submitted, 1, "4 requests read, in one job")
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202] * 10)
        self.assertEqual(transport.producerState, "producing")

    def test_keep_alive_rules(self) -> None:
        """HTTP/1.1 stays open unless asked to close; HTTP/1.0 closes unless asked to stay."""
        cases = [
            (get(b"/ping"), False, None),
            (get(b"/ping", b"Connection: close"), True, b"close"),
            (get(b"/ping", version=b"HTTP/1.0"), True, None),
            (get(b"/ping", b"Connection: keep-alive", version=b"HTTP/1.0"), False, b"keep-alive"),
        ]
        for request, closes, connection_header in cases:
            stack = Stack()
            channel, transport = stack.connect()
            channel.dataReceived(request)
            [answer] = parse_answers(transport.value())
            self.assertEqual(answer.status, 204)
            self.assertEqual(transport.disconnecting, closes, request)
            self.assertEqual(answer.headers.get(b"connection"), connection_header)

    def test_http10_answered_in_http10(self) -> None:
        """An HTTP/1.0 request gets an HTTP/1.0 status line."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping", version=b"HTTP/1.0"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.0 204 "))

    def test_head_has_no_body(self) -> None:
        """HEAD on a GET route answers the headers of GET without the body."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/health", method=b"HEAD") + get(b"/ping"))
        head, rest = transport.value().split(b"\r\n\r\n", 1)
        self.assertIn(b"200 OK", head)
        self.assertIn(b"Content-Length: ", head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 204 "), rest)

    def test_chunked_body(self) -> None:
        """A chunked POST is decoded and accepted, fed whole and byte by byte."""
        body = b"[" + SAMPLE + b"," + SAMPLE + b"]"
        encoded = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: y\r\n\r\n" % (
            10,
            body[:10],
            len(body) - 10,
            body[10:],
        )
        request = b"POST /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + encoded
        for bytewise in (False, True):
            stack = Stack(inline=True)
            channel, transport = stack.connect()
            pieces = [request[i : i + 1] for i in range(len(request))] if bytewise else [request]
            for piece in pieces:
                channel.dataReceived(piece)
            channel.dataReceived(get(b"/ping"))
            self.assertEqual([a.status for a in parse_answers(transport.value())], [202, 204])

    def test_expect_continue(self) -> None:
        """Expect: 100-continue gets a 100 before the body; a refused path gets its answer and a close."""
        stack = Stack(inline=True)
        channel, transport = stack.connect()
        head = (
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % len(SAMPLE)
        )
        channel.dataReceived(head)
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        channel.dataReceived(SAMPLE)
        self.assertEqual(parse_answers(transport.value())[0].status, 202)

        stack = Stack(inline=True)
        channel, transport = stack.connect()
        channel.dataReceived(head.replace(b"/metrics", b"/elsewhere"))
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.status, 404)
        self.assertTrue(transport.disconnecting)

    def test_expect_continue_waits_its_turn(self) -> None:
        """The 100 of a pipelined request is sent only after the answers before it."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(
            post(b"/metrics", SAMPLE)
            + b"POST /metrics HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
            % len(SAMPLE)
        )
        self.assertEqual(transport.value(), b"")
        stack.settle()
        data = transport.value()
        self.assertTrue(data.startswith(b"HTTP/1.1 202 "))
        self.assertTrue(data.endswith(b"HTTP/1.1 100 Continue\r\n\r\n"), data)


class RefusalTests(SynchronousTestCase):
    def assertRefused(self, request: bytes, status: int, closes: bool, **stack_args: object) -> dict:
        stack = Stack(inline=True, **stack_args)  # type: ignore[arg-type]
        channel, transport = stack.connect()
        channel.dataReceived(request + get(b"/ping"))
        answers = parse_answers(transport.value())
        self.assertEqual(answers[0].status, status, answers)
        body = answers[0].json()
        self.assertEqual(set(body) >= {"error", "detail"}, True, body)
        self.assertEqual(transport.disconnecting, closes)
        if closes:
            self.assertEqual(len(answers), 1, "nothing after a framing error is answered")
        else:
            self.assertEqual([a.status for a in answers[1:]], [204])
        return answers[0]

    def test_framing_errors_close(self) -> None:
        """Each smuggling-prone framing gets 400, naming the rule it breaks, and a closed connection."""
        for request, detail in [
            (
                b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
                "more than one Content-Length",
            ),
            (b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: +2\r\n\r\n{}", "digits"),
            (
                b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n0\r\n\r\n",
                "with Transfer-Encoding",
            ),
            (
                b"POST /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                "only chunked",
            ),
            (b"POST /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
            (
                b"POST /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2;\r\n{}\r\n0\r\n\r\n",
                "chunk extension",
            ),
            (b"POST /metrics HTTP/1.1\r\nHost : x\r\nContent-Length: 0\r\n\r\n", "Host : x"),
            (b"POST /metrics HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", "folding"),
            (b"GET  /ping HTTP/1.1\r\nHost: t\r\n\r\n", "GET  /ping"),
            (b"GET /ping HTTP/1.1\nHost: x\r\n\r\n", "HTTP/1.1\\nHost"),
            (b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
            (b"GET /ping HTTP/1.1\r\n\r\n", "missing Host"),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "missing Host"),
        ]:
            answer = self.assertRefused(request, 400, True)
            self.assertIn(detail, answer.json()["detail"], request)

    def test_head_framing_error_has_no_body(self) -> None:
        """A HEAD whose head breaks a framing rule gets its 400 without a body (no answer to a HEAD has
        one: RFC 9112 section 6.3), and the connection closes."""
        stack = Stack(inline=True)
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping", b"Content-Length: 1", b"Content-Length: 2", method=b"HEAD"))
        [answer] = parse_answers(transport.value(), head_request=True)
        self.assertEqual((answer.status, answer.body), (400, b""))
        self.assertNotEqual(answer.headers[b"content-length"], b"0")
        self.assertTrue(transport.disconnecting)

    def test_host(self) -> None:
        """HTTP/1.0 needs no Host, and an empty Host value is a Host (RFC 9110 section 7.2)."""
        for request in [b"GET /ping HTTP/1.0\r\n\r\n", b"GET /ping HTTP/1.1\r\nHost:\r\n\r\n"]:
            stack = Stack(inline=True)
            channel, transport = stack.connect()
            channel.dataReceived(request)
            self.assertEqual([a.status for a in parse_answers(transport.value())], [204], request)

    def test_status_table(self) -> None:
        """Each refusal of PRODUCT.md's table gets its status, JSON body and connection fate."""
        self.assertRefused(b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 411, True)
        self.assertRefused(post(b"/metrics", b"{}" * 10), 413, True, limits=Limits(max_body=19))
        self.assertRefused(get(b"/ping", version=b"HTTP/2.0"), 505, True)
        self.assertRefused(post(b"/metrics", SAMPLE, b"Content-Type: text/xml"), 415, False)
        self.assertRefused(post(b"/metrics", SAMPLE, b"Content-Encoding: br"), 415, False)
        self.assertRefused(post(b"/nowhere", SAMPLE), 404, False)
        self.assertRefused(post(b"/metrics", b"{nope"), 400, False)
        answer = self.assertRefused(post(b"/ping", SAMPLE), 405, False)
        self.assertEqual(answer.headers[b"allow"], b"GET, HEAD")
        answer = self.assertRefused(get(b"/write"), 405, False)
        self.assertEqual(answer.headers[b"allow"], b"POST")

    def test_body_limit_at_n_and_n_plus_1(self) -> None:
        """A body of exactly max_body bytes is read; one byte more is 413."""
        body = b"[" + SAMPLE + b"]"
        limits = Limits(max_body=len(body))
        stack = Stack(inline=True, limits=limits)
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", body))
        self.assertEqual(parse_answers(transport.value())[0].status, 202)
        self.assertRefused(post(b"/metrics", body + b" "), 413, True, limits=limits)

    def test_line_limits_at_n_and_n_plus_1(self) -> None:
        """Request line and header line limits: N is served, N+1 gets 414 and 431."""
        limits = Limits(max_request_line=64, max_header_line=64, max_headers=3)
        target = b"/ping?" + b"q" * (64 - len(b"GET /ping? HTTP/1.1"))
        line = b"GET " + target + b" HTTP/1.1"
        self.assertEqual(len(line), 64)
        stack = Stack(inline=True, limits=limits)
        channel, transport = stack.connect()
        channel.dataReceived(line + b"\r\nHost: t\r\n\r\n")
        self.assertEqual(parse_answers(transport.value())[0].status, 204)
        self.assertRefused(line.replace(b"?", b"?q") + b"\r\nHost: t\r\n\r\n", 414, True, limits=limits)

        field = b"X-A: " + b"v" * (64 - 5)
        stack = Stack(inline=True, limits=limits)
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping", field))
        self.assertEqual(parse_answers(transport.value())[0].status, 204)
        self.assertRefused(get(b"/ping", field + b"v"), 431, True, limits=limits)
        self.assertRefused(get(b"/ping", b"A: 1", b"B: 2", b"C: 3"), 431, True, limits=limits)

    def test_overlong_line_without_end(self) -> None:
        """A request line that never ends is refused with 414 once it passes the limit."""
        stack = Stack(limits=Limits(max_request_line=100))
        channel, transport = stack.connect()
        channel.dataReceived(b"GET /" + b"a" * 200)
        self.assertEqual(parse_answers(transport.value())[0].status, 414)
        self.assertTrue(transport.disconnecting)

    def test_buffer_full(self) -> None:
        """When the buffer cannot take a request's samples, none are kept: 503 with Retry-After."""
        stack = Stack(inline=True, capacity=10)
        channel, transport = stack.connect()

        def batch(count: int) -> bytes:
            return post(b"/metrics", b"[" + b",".join([SAMPLE] * count) + b"]")

        channel.dataReceived(batch(11) + batch(5) + batch(6) + batch(3))
        answers = parse_answers(transport.value())
        self.assertEqual([a.status for a in answers], [503, 202, 503, 202])
        self.assertEqual(answers[0].headers[b"retry-after"], b"1")
        self.assertEqual(len(stack.stored()), 8)

    def test_partial_write(self) -> None:
        """Valid samples of a batch are kept; the answer lists the rejected ones by index."""
        stack = Stack(inline=True)
        channel, transport = stack.connect()
        body = b'[{"name":"a","value":1},{"name":"b","value":"x"},{"name":"c","value":2,"extra":1}]'
        channel.dataReceived(post(b"/metrics", body))
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.status, 400)
        document = answer.json()
        self.assertEqual(document["error"], "partial write")
        self.assertEqual((document["accepted"], document["rejected"]), (1, 2))
        self.assertEqual([e["index"] for e in document["errors"]], [1, 2])
        self.assertEqual([s["name"] for s in stack.stored()], ["a"])


class TimeoutTests(SynchronousTestCase):
    def test_idle_connection_closes(self) -> None:
        """An idle connection closes after idle_timeout, not before; traffic resets the timer."""
        stack = Stack(idle_timeout=10)
        channel, transport = stack.connect()
        stack.clock.advance(9)
        channel.dataReceived(get(b"/ping"))
        stack.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        stack.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(parse_answers(transport.value())), 1, "an idle close sends nothing")

    def test_partial_request_gets_408(self) -> None:
        """A request left half-sent past the timeout gets 408 before the close."""
        stack = Stack(idle_timeout=5)
        channel, transport = stack.connect()
        channel.dataReceived(b"POST /metrics HTTP/1.1\r\nContent-Len")
        stack.clock.advance(5)
        self.assertEqual(parse_answers(transport.value())[0].status, 408)
        self.assertTrue(transport.disconnecting)

    def test_no_timeout_while_answer_pending(self) -> None:
        """A request waiting for the pool does not count as idle."""
        stack = Stack(idle_timeout=5)
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        stack.clock.advance(30)
        self.assertFalse(transport.disconnecting)
        stack.settle()
        self.assertEqual(parse_answers(transport.value())[0].status, 202)
        stack.clock.advance(5)
        self.assertTrue(transport.disconnecting)


class ShutdownTests(SynchronousTestCase):
    def test_half_close_answers_then_closes(self) -> None:
        """A peer that stops sending still gets the answers it asked for, then the close."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        channel.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        stack.settle()
        self.assertEqual(parse_answers(transport.value())[0].status, 202)
        self.assertTrue(transport.disconnecting)

    def test_drain_waits_for_answers(self) -> None:
        """drain closes idle connections at once and busy ones after their answers."""
        stack = Stack()
        idle, idle_transport = stack.connect()
        busy, busy_transport = stack.connect()
        busy.dataReceived(post(b"/metrics", SAMPLE))
        drained = stack.factory.drain(grace=10)
        self.assertTrue(idle_transport.disconnecting)
        self.assertFalse(busy_transport.disconnecting)
        idle.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(drained)
        stack.settle()
        self.assertEqual(parse_answers(busy_transport.value())[0].status, 202)
        self.assertTrue(busy_transport.disconnecting)
        busy.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        self.assertEqual(stack.stats.connections_open, 0)

    def test_drain_answers_an_idle_connections_next_request_with_close(self) -> None:
        """Draining, a keep-alive connection between requests is not closed under the request its client
        may be sending: that request is read, answered 202 with Connection: close, then the close."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        stack.settle()
        drained = stack.factory.drain(grace=10, linger=1)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(post(b"/metrics", SAMPLE))
        stack.settle()
        first, last = parse_answers(transport.value())
        self.assertEqual((first.status, first.headers.get(b"connection")), (202, None))
        self.assertEqual((last.status, last.headers[b"connection"]), (202, b"close"))
        self.assertTrue(transport.disconnecting)
        channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        self.assertEqual(len(stack.stored()), 2)

    def test_drain_reads_a_head_in_progress(self) -> None:
        """Draining, a request whose head has begun to arrive is read to its end and answered with close."""
        stack = Stack()
        channel, transport = stack.connect()
        request = post(b"/metrics", SAMPLE)
        channel.dataReceived(request[:10])
        stack.factory.drain(grace=10, linger=1)
        stack.clock.advance(1)  # the linger ends: the connection is not idle
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(request[10:])
        stack.settle()
        [answer] = parse_answers(transport.value())
        self.assertEqual((answer.status, answer.headers[b"connection"]), (202, b"close"))
        self.assertTrue(transport.disconnecting)

    def test_drain_closes_connections_still_idle_after_the_linger(self) -> None:
        """An idle connection whose client sends nothing within the linger is closed then, not before."""
        stack = Stack()
        channel, transport = stack.connect()
        drained = stack.factory.drain(grace=10, linger=1)
        stack.clock.advance(0.999)
        self.assertFalse(transport.disconnecting)
        stack.clock.advance(0.001)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)

    def test_drain_aborts_after_grace(self) -> None:
        """A connection still open after the grace period is aborted."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        drained = stack.factory.drain(grace=3)
        stack.clock.advance(3)
        self.assertTrue(transport.disconnected)
        channel.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)


class OrderTests(SynchronousTestCase):
    def test_pipelined_get_sees_earlier_posts(self) -> None:
        """A GET pipelined behind POSTs is handled after them: /stats counts their samples."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(
            post(b"/metrics", SAMPLE) + post(b"/metrics", SAMPLE) + get(b"/stats") + post(b"/metrics", SAMPLE)
        )
        stack.settle()
        answers = parse_answers(transport.value())
        self.assertEqual([a.status for a in answers], [202, 202, 200, 202])
        self.assertEqual(answers[2].json()["samples"]["accepted"], 2)

    def test_framing_error_after_pipelined_requests(self) -> None:
        """Requests before a framing error are answered first, then the error, then the close."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(
            post(b"/metrics", SAMPLE) + get(b"/ping") + b"BAD REQUEST LINE\r\n\r\n" + get(b"/ping")
        )
        self.assertEqual(transport.value(), b"")
        stack.settle()
        answers = parse_answers(transport.value())
        self.assertEqual([a.status for a in answers], [202, 204, 400])
        self.assertTrue(transport.disconnecting)


class RejectionLogTests(SynchronousTestCase):
    def test_rejections_logged_at_a_bounded_rate(self) -> None:
        """Rejected requests are logged with client, status and reason, at most a burst at once; the rest
        are counted and the count is told in the next line that gets through."""
        from twisted.logger import capturedLogs

        from ingest.protocol import REJECTION_LOG_BURST, REJECTION_LOG_RATE

        stack = Stack(inline=True)
        channel, _ = stack.connect()
        with capturedLogs() as events:
            channel.dataReceived(get(b"/nowhere") * 30)
            stack.clock.advance(1)
            channel.dataReceived(get(b"/nowhere"))
            channel.dataReceived(get(b"/ping"))
        lines = [event for event in events if "rejected request" in event.get("log_format", "")]
        self.assertEqual(len(lines), int(REJECTION_LOG_BURST) + 1)
        self.assertEqual(
            (lines[0]["client"], lines[0]["status"], lines[0]["reason"]), ("192.168.1.1", 404, "not found")
        )
        self.assertIn(f"{30 - int(REJECTION_LOG_BURST)} more", lines[-1]["more"])
        self.assertGreater(REJECTION_LOG_RATE, 0)

    def test_unhealthy_answer_is_not_logged_as_a_rejection(self) -> None:
        """A 503 from /health reports the service's state; it is counted but not logged as a rejection."""
        from twisted.logger import capturedLogs

        stack = Stack(inline=True, storage_problem=lambda: "[Errno 5] Input/output error")
        channel, transport = stack.connect()
        with capturedLogs() as events:
            channel.dataReceived(get(b"/health"))
        self.assertEqual(parse_answers(transport.value())[0].status, 503)
        self.assertEqual([e for e in events if "rejected request" in e.get("log_format", "")], [])
        self.assertEqual(stack.stats.responses[("/health", 503)], 1)

    def test_rejection_before_the_first_request_names_the_client(self) -> None:
        """A request line refused as too long is logged with the client's address, read at that moment."""
        from twisted.logger import capturedLogs

        stack = Stack(inline=True)
        channel, _ = stack.connect()
        with capturedLogs() as events:
            channel.dataReceived(b"G" * (stack.factory.limits.max_request_line + 10))
        [line] = [e for e in events if "rejected request" in e.get("log_format", "")]
        self.assertEqual((line["client"], line["status"]), ("192.168.1.1", 414))


class FlowControlTests(SynchronousTestCase):
    def test_slowloris_head_gets_408(self) -> None:
        """A head trickled in a byte at a time is cut off header_timeout after its first byte."""
        stack = Stack(idle_timeout=60)
        stack.factory.header_timeout = 10
        channel, transport = stack.connect()
        head = b"POST /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100
        for byte in head[:30]:
            channel.dataReceived(bytes([byte]))
            stack.clock.advance(0.3)
        self.assertFalse(transport.disconnecting)
        for byte in head[30:]:
            channel.dataReceived(bytes([byte]))
            stack.clock.advance(0.3)
            if transport.disconnecting:
                break
        self.assertTrue(transport.disconnecting)
        self.assertEqual(parse_answers(transport.value())[0].status, 408)
        elapsed = stack.clock.seconds() - 1_700_000_000
        self.assertTrue(10 <= elapsed <= 10.5, elapsed)

    def test_head_timer_only_while_a_head_is_partial(self) -> None:
        """A connection between requests, or waiting for its own answers, is not timed as a slow head."""
        stack = Stack(idle_timeout=600)
        stack.factory.header_timeout = 10
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping"))
        stack.clock.advance(60)
        channel.dataReceived(post(b"/metrics", SAMPLE))
        stack.clock.advance(60)  # the answer waits for the pool: not the client's fault
        self.assertFalse(transport.disconnecting)
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [204, 202])

    def test_pressure_pauses_and_resumes_every_channel(self) -> None:
        """set_pressure(True) stops reading from every connection; False starts again, with pending data."""
        stack = Stack(inline=True)
        connections = [stack.connect() for _ in range(3)]
        stack.factory.set_pressure(True)
        for _, transport in connections:
            self.assertEqual(transport.producerState, "paused")
        channel, transport = connections[0]
        channel.dataReceived(get(b"/ping"))
        stack.factory.set_pressure(False)
        for _, other in connections:
            self.assertEqual(other.producerState, "producing")
        self.assertEqual(parse_answers(transport.value())[0].status, 204)

    def test_buffer_high_mark_pauses_readers(self) -> None:
        """Wired as in service, filling the buffer past its high mark pauses the connections."""
        stack = Stack(inline=True, capacity=10)
        stack.buffer.on_pressure = stack.factory.set_pressure
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", b"[" + b",".join([SAMPLE] * 8) + b"]"))
        self.assertEqual(transport.producerState, "paused")
        stack.buffer.take()
        stack.buffer.commit()
        self.assertEqual(transport.producerState, "producing")

    def test_pauses_combine(self) -> None:
        """Reading resumes only when every reason to pause is gone."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.pause("pressure")
        channel.pauseProducing()  # the transport's write buffer is full
        channel.resume("pressure")
        self.assertEqual(transport.producerState, "paused")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_peer_that_stops_reading_is_aborted(self) -> None:
        """When the transport stays full for write_grace seconds, the connection is aborted."""
        stack = Stack()
        stack.factory.write_grace = 30
        channel, transport = stack.connect()
        channel.pauseProducing()
        stack.clock.advance(29)
        self.assertFalse(transport.disconnected)
        channel.resumeProducing()
        channel.pauseProducing()
        stack.clock.advance(29)
        self.assertFalse(transport.disconnected)
        stack.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_max_connections_pauses_accepting(self) -> None:
        """At max_connections the factory stops reading its port; below, it reads again."""

        class Port:
            reading = True

            def stopReading(self) -> None:
                self.reading = False

            def startReading(self) -> None:
                self.reading = True

        stack = Stack()
        stack.factory.max_connections = 2
        stack.factory.listening = port = Port()
        first, _ = stack.connect()
        self.assertTrue(port.reading)
        stack.connect()
        self.assertFalse(port.reading)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(port.reading)

    def test_max_connections_refuses_past_the_limit(self) -> None:
        """A connection accepted past max_connections (the accept loop took it before the port paused)
        is aborted in connectionMade, unread and uncounted as open; at N it is served, at N + 1 refused,
        and once one closes a new one is served again."""
        stack = Stack()
        stack.factory.max_connections = 2
        kept = [stack.connect() for _ in range(2)]
        refused, transport = stack.connect()
        self.assertTrue(transport.disconnected)  # StringTransport's abortConnection
        self.assertEqual(stack.factory.channels, {channel for channel, _ in kept})
        refused.dataReceived(get(b"/ping"))
        self.assertEqual(transport.value(), b"")
        refused.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            (stack.stats.connections_open, stack.stats.connections_total, stack.stats.connections_refused),
            (2, 2, 1),
        )
        kept[0][0].connectionLost(Failure(ConnectionDone()))
        channel, transport = stack.connect()
        self.assertFalse(transport.disconnected)
        channel.dataReceived(get(b"/ping"))
        self.assertEqual(parse_answers(transport.value())[0].status, 204)


class DurableTests(SynchronousTestCase):
    def test_durable_ack_waits_for_the_disk(self) -> None:
        """In durable mode the 202 is sent only once the flusher reports the batch on disk."""
        from twisted.internet.defer import Deferred

        from ingest.api import Api

        waiting: list[tuple[int, Deferred[None]]] = []

        def durable(seq: int) -> Deferred[None]:
            done: Deferred[None] = Deferred()
            waiting.append((seq, done))
            return done

        stack = Stack(inline=True)
        stack.api = Api(stack.buffer, stack.queue, stack.stats, stack.clock, lambda: None, durable=durable)
        stack.factory.app = stack.api
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE) + get(b"/ping"))
        self.assertEqual(transport.value(), b"")
        self.assertEqual([seq for seq, _ in waiting], [1])
        waiting[0][1].callback(None)
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202, 204])


class CloseTests(SynchronousTestCase):
    def test_close_stops_being_the_producer_first(self) -> None:
        """Before it closes, the channel unregisters as the transport's producer: a transport that paused
        it would otherwise resume it when its buffer drains, instead of closing (a connection left open,
        read by no one)."""
        stack = Stack(inline=True)
        channel, transport = stack.connect()
        self.assertIs(transport.producer, channel)
        channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.assertEqual(parse_answers(transport.value())[0].status, 204)
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)

    def test_closing_connection_that_stays_open_is_aborted(self) -> None:
        """A connection closing with nothing owed that is still open close_grace after the close began
        (its peer does not take the last bytes) is aborted, not sent a 408."""
        stack = Stack(inline=True, idle_timeout=5)
        channel, transport = stack.connect()
        channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        stack.clock.advance(stack.factory.timeouts.close_grace - 0.01)
        self.assertFalse(transport.disconnected)
        stack.clock.advance(0.01)
        self.assertTrue(transport.disconnected, "aborted")
        self.assertEqual(
            [a.status for a in parse_answers(transport.value())], [204], "no 408 after the close"
        )


class StalledClientTests(SynchronousTestCase):
    def test_stalled_body_gets_408(self) -> None:
        """A body that stops arriving is cut off at the idle timeout with 408, not kept open for ever."""
        stack = Stack(idle_timeout=5)
        channel, transport = stack.connect()
        channel.dataReceived(b'POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 24\r\n\r\n{"nam')
        stack.clock.advance(5)
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.status, 408)
        self.assertTrue(transport.disconnecting)

    def test_half_close_mid_body_gets_400(self) -> None:
        """A peer that half-closes in the middle of a body gets 400 and the connection closes."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(
            post(b"/metrics", SAMPLE) + b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 24\r\n\r\n{"
        )
        channel.readConnectionLost()
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202, 400])
        self.assertTrue(transport.disconnecting)


class SplitTests(SynchronousTestCase):
    def test_line_protocol_split_at_every_offset(self) -> None:
        """A line-protocol write cut in two at every offset is answered and stored as when sent whole."""
        body = (
            b'weather,city=New\\ York temp=12.5,ok=t,note="a \\"b\\"" 1700000000\r\n'
            b"weather,city=Oslo temp=-3i\n"
        )
        request = post(b"/write?precision=s", body)

        def send(pieces: list[bytes]) -> tuple[list[int], list[dict]]:
            stack = Stack(inline=True)
            channel, transport = stack.connect()
            for piece in pieces:
                channel.dataReceived(piece)
            return [a.status for a in parse_answers(transport.value())], stack.stored()

        whole = send([request])
        self.assertEqual(whole[0], [204])
        self.assertEqual([s["name"] for s in whole[1]], ["weather_temp", "weather_ok", "weather_temp"])
        for offset in range(1, len(request)):
            self.assertEqual(send([request[:offset], request[offset:]])[0], whole[0], offset)
            self.assertEqual(
                [s["value"] for s in send([request[:offset], request[offset:]])[1]],
                [s["value"] for s in whole[1]],
            )


class CloseDeadlineTests(SynchronousTestCase):
    """Every path that starts a close leaves a deadline after which the connection is aborted.

    The peer here never reads: a `StringTransport` stays open after
    `loseConnection` (``disconnecting``) until it is aborted (``disconnected``).
    """

    def assert_aborted_after_close_grace(self, stack: Stack, transport: StringTransport) -> None:
        self.assertTrue(transport.disconnecting, "the close began")
        self.assertFalse(transport.disconnected)
        stack.clock.advance(stack.factory.timeouts.close_grace - 0.01)
        self.assertFalse(transport.disconnected, "aborted before close_grace")
        stack.clock.advance(0.01)
        self.assertTrue(transport.disconnected, "aborted at close_grace")

    def test_after_a_408_of_the_head_timer(self) -> None:
        """A 408 the timer itself sent (a head that never ends): aborted close_grace later.

        (Before: the timer did not re-arm after starting this close, so a peer that never read held
        its connection for good.)"""
        stack = Stack(header_timeout=10)
        channel, transport = stack.connect()
        channel.dataReceived(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
        stack.clock.advance(10)
        self.assertEqual([a.status for a in parse_answers(transport.value())], [408])
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_a_408_of_a_silent_body(self) -> None:
        """A body that stopped coming gets 408 at the idle timeout, then the abort deadline."""
        stack = Stack(idle_timeout=5)
        channel, transport = stack.connect()
        channel.dataReceived(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n{")
        stack.clock.advance(5)
        self.assertEqual([a.status for a in parse_answers(transport.value())], [408])
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_an_idle_close(self) -> None:
        """An idle connection closed by the timer: aborted close_grace later if still open."""
        stack = Stack(idle_timeout=5)
        _, transport = stack.connect()
        stack.clock.advance(5)
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_connection_close(self) -> None:
        """The answer to a ``Connection: close`` request, and the abort deadline."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping", b"Connection: close"))
        stack.settle()
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_a_framing_error(self) -> None:
        """A framing error's 400, and the abort deadline."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n")
        self.assertEqual([a.status for a in parse_answers(transport.value())], [400])
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_a_half_close(self) -> None:
        """A peer that half-closed gets its answers, then the close, then the abort deadline."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        channel.readConnectionLost()
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202])
        self.assert_aborted_after_close_grace(stack, transport)

    def test_after_a_drain(self) -> None:
        """Shutdown's close of an idle connection, and the abort deadline (before the drain's own grace)."""
        stack = Stack()
        _, transport = stack.connect()
        stack.factory.drain(grace=3600)
        self.assert_aborted_after_close_grace(stack, transport)

    def test_408_waits_for_the_answers_before_it(self) -> None:
        """A pipelined head that stops coming behind an answer still owed: the 408 follows that answer,
        and the abort deadline follows the close."""
        stack = Stack(header_timeout=10)
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE) + b"GET /ping HTTP/1.1\r\n")
        stack.clock.advance(10)
        self.assertEqual(transport.value(), b"", "nothing may overtake the POST")
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202, 408])
        self.assert_aborted_after_close_grace(stack, transport)

    def test_peer_that_never_reads(self) -> None:
        """A peer whose unread answers fill the transport is aborted write_grace after the stall began,
        open requests or not."""
        stack = Stack()
        channel, transport = stack.connect()
        channel.dataReceived(post(b"/metrics", SAMPLE))
        channel.pauseProducing()  # the transport's buffer is full
        stack.clock.advance(stack.factory.timeouts.write_grace - 0.01)
        self.assertFalse(transport.disconnected)
        stack.clock.advance(0.01)
        self.assertTrue(transport.disconnected)


class RecycleTests(SynchronousTestCase):
    """``--max-requests-per-connection`` and ``--max-connection-age``: the last answer closes, none is cut."""

    def test_max_requests_at_n_and_past_it(self) -> None:
        """With 3 a connection, answers 1 and 2 keep it, answer 3 says ``Connection: close`` and the
        connection closes; a fourth request pipelined behind the third is not read (no answer, nothing
        stored)."""
        stack = Stack(inline=True)
        stack.factory.max_requests_per_connection = 3
        channel, transport = stack.connect()
        channel.dataReceived(get(b"/ping") + get(b"/ping"))
        answers = parse_answers(transport.value())
        self.assertEqual([a.status for a in answers], [204, 204])
        self.assertNotIn(b"connection", answers[1].headers)
        self.assertFalse(transport.disconnecting)
        transport.clear()
        channel.dataReceived(post(b"/metrics", SAMPLE) + post(b"/metrics", SAMPLE))
        [last] = parse_answers(transport.value())
        self.assertEqual((last.status, last.headers[b"connection"]), (202, b"close"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(stack.buffer.depth, 1)

    def test_max_age_closes_with_the_first_answer_past_it(self) -> None:
        """With 300 s, a request at 299 s keeps the connection; the first one at 300 s is answered with
        ``Connection: close`` and the connection closes.  An idle connection past its age stays open
        until its next request (or its idle timeout)."""
        stack = Stack(inline=True, idle_timeout=600.0)
        stack.factory.max_connection_age = 300.0
        channel, transport = stack.connect()
        stack.clock.advance(299)
        channel.dataReceived(get(b"/ping"))
        [answer] = parse_answers(transport.value())
        self.assertNotIn(b"connection", answer.headers)
        stack.clock.advance(100)
        self.assertFalse(transport.disconnecting, "idle past its age: not closed for that")
        transport.clear()
        channel.dataReceived(get(b"/ping"))
        [answer] = parse_answers(transport.value())
        self.assertEqual(answer.headers[b"connection"], b"close")
        self.assertTrue(transport.disconnecting)

    def test_age_passing_with_requests_in_flight_cuts_none(self) -> None:
        """Two POSTs in the parse pool when the age passes, then a GET arrives: the POSTs are answered
        first (keep-alive), the GET last with ``Connection: close``; a body still arriving when its head
        came past the age is read to its end and answered.  Fed whole and byte by byte."""
        for split in (False, True):
            stack = Stack()
            stack.factory.max_connection_age = 60.0
            channel, transport = stack.connect()

            def feed(data: bytes, channel: HttpChannel = channel, split: bool = split) -> None:
                for index in range(len(data)) if split else [None]:
                    channel.dataReceived(data if index is None else data[index : index + 1])

            feed(post(b"/metrics", SAMPLE) + post(b"/metrics", SAMPLE))
            stack.clock.advance(60)
            late = post(b"/metrics", SAMPLE)
            feed(late[:-5])
            self.assertEqual(transport.value(), b"")
            stack.settle()
            feed(late[-5:] + get(b"/ping"))
            stack.settle()
            answers = parse_answers(transport.value())
            self.assertEqual([a.status for a in answers], [202, 202, 202], split)
            self.assertEqual([a.headers.get(b"connection") for a in answers], [None, None, b"close"], split)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(stack.buffer.depth, 3)
