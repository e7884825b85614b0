"""The channel under any interleaving: byte streams split at random points, the pool finishing in any order.

A test that sends a whole pipeline in one write proves little (issue 10's
hang needed a head to arrive alone).  Here hypothesis draws a pipeline of
requests of every kind the channel treats apart (POSTs that run in the
pool, safe requests that wait for them, refusals from the head, chunked
bodies, ``Expect: 100-continue`` from clients that wait for it and from
clients that do not, a request that closes, a framing error, bytes after
the close), cuts the stream at arbitrary points, and interleaves the
pieces with pool jobs finishing in arbitrary order.  Whatever it draws:

- every request up to the one that closes is answered exactly once, in
  order, with the status its kind gets, and nothing after it is answered;
- a waiting client gets its ``100 Continue`` (else it would wait for ever);
- a pipelined ``GET /stats`` counts exactly the samples of the POSTs before it;
- the samples stored are those of the accepted POSTs, in order;
- the connection is closing at the end exactly when a request closed it
  or the client half-closed;
- a connection lost at any byte, with jobs in the pool, is released at
  once and written to no more (`LostMidPipelineTests`).

``HYPOTHESIS_EXAMPLES`` sets the number of examples (200 in CI).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ingest.pool import INLINE_BYTES
from tests.helpers import SAMPLE, Stack, get, parse_answers, post

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "200"))


@dataclass(frozen=True)
class Case:
    """One kind of request: its bytes (head and body apart), the status it gets, the samples it stores."""

    name: str
    head: bytes
    body: bytes = b""
    status: int = 202
    samples: int = 0
    closes: bool = False
    waits_for_continue: bool = False


def split_post(
    path: bytes, body: bytes, *headers: bytes, version: bytes = b"HTTP/1.1"
) -> tuple[bytes, bytes]:
    whole = post(path, body, *headers, version=version)
    return whole[: len(whole) - len(body)], body


def case(name: str, request: tuple[bytes, bytes], status: int, samples: int = 0, **kw: bool) -> Case:
    return Case(name, request[0], request[1], status, samples, **kw)


TWO = b"[" + SAMPLE + b"," + SAMPLE + b"]"
CHUNKED = (
    b"POST /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"%x\r\n%s\r\n0\r\n\r\n" % (len(SAMPLE), SAMPLE),
)
EXPECT = b"Expect: 100-continue"

CASES = [
    case("post", split_post(b"/metrics", SAMPLE), 202, 1),
    case("post two", split_post(b"/metrics", TWO), 202, 2),
    case("post invalid", split_post(b"/metrics", b'{"name":'), 400),
    case("line protocol", split_post(b"/write", b"cpu v=1 1\ncpu v=2 2"), 204, 2),
    case("ping", (get(b"/ping"), b""), 204),
    case("head ping", (get(b"/ping", method=b"HEAD"), b""), 204),
    case("stats", (get(b"/stats"), b""), 200),
    case("not found", (get(b"/nowhere"), b""), 404),
    case("post not found", split_post(b"/nowhere", SAMPLE), 404),
    case("chunked", CHUNKED, 202, 1),
    case("eager expect", split_post(b"/metrics", SAMPLE, EXPECT), 202, 1),
    case("waiting expect", split_post(b"/metrics", SAMPLE, EXPECT), 202, 1, waits_for_continue=True),
]
LAST = [
    case("ping and close", (get(b"/ping", b"Connection: close"), b""), 204, closes=True),
    case("http/1.0 post", split_post(b"/metrics", SAMPLE, version=b"HTTP/1.0"), 202, 1, closes=True),
    case("framing error", (b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\n", b""), 400),
]


def continued(output: bytes) -> list[int]:
    """The indices of the requests whose final answer a ``100 Continue`` precedes in `output`."""
    indices = []
    finals = 0
    for answer in parse_answers(output):
        if answer.interim:
            indices.append(finals)
        else:
            finals += 1
    return indices


PARSING = ("pool", "idle pool inline", "inline")
"""Where bodies are decoded: always in the pool; on the reactor while the pool is idle and in the pool
otherwise (the service's default); always on the reactor (``--threads 0``)."""


def parsing_stack(parsing: str) -> Stack:
    return Stack(
        inline=parsing == "inline",
        max_pipeline=4,
        inline_bytes=INLINE_BYTES if parsing == "idle pool inline" else 0,
    )


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[list[Case], Case | None, bool]:
    """Requests, maybe a last one that closes (with bytes after it), maybe a half-close at the end."""
    cases = draw(st.lists(st.sampled_from(CASES), max_size=8))
    last = draw(st.none() | st.sampled_from(LAST))
    half_close = last is None and draw(st.booleans())
    return cases, last, half_close


class InterleavingTests(SynchronousTestCase):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(pipeline=pipelines(), parsing=st.sampled_from(PARSING), data=st.data())
    def test_any_split_any_completion_order(
        self, pipeline: tuple[list[Case], Case | None, bool], parsing: str, data: st.DataObject
    ) -> None:
        """Any split of the stream and any completion order of the pool: the module docstring's promises."""
        cases, last, half_close = pipeline
        stack = parsing_stack(parsing)
        channel, transport = stack.connect()

        # The stream, in segments: a client waiting for 100 Continue sends nothing after its head until then.
        segments: list[tuple[bytes, int | None]] = []  # bytes, and the request whose 100 must come first
        waiting: int | None = None
        current = b""
        for index, request in enumerate(cases):
            current += request.head
            if request.waits_for_continue:
                segments.append((current, waiting))
                waiting = index
                current = b""
            current += request.body
        if last is not None:
            current += last.head + last.body + post(b"/metrics", SAMPLE)  # nothing after the close is read
        segments.append((current, waiting))

        def pool_step() -> None:
            stack.clock.advance(0)
            if stack.pool.jobs:
                stack.pool.run_one(data.draw(st.integers(0, len(stack.pool.jobs) - 1), label="job"))

        def settle() -> None:
            stack.clock.advance(0)
            while stack.pool.jobs:
                pool_step()
                stack.clock.advance(0)

        for segment, waiting_for in segments:
            if waiting_for is not None and waiting_for not in continued(transport.value()):
                settle()  # the client waits: only the service can move
                self.assertIn(waiting_for, continued(transport.value()), "a waiting client got no 100")
            points = st.sets(st.integers(1, max(len(segment) - 1, 1)), max_size=6)
            cuts = sorted(data.draw(points, label="cuts"))
            for start, end in zip([0, *cuts], [*cuts, len(segment)], strict=True):
                for _ in range(data.draw(st.integers(0, 2), label="pool steps")):
                    pool_step()
                channel.dataReceived(segment[start:end])
        if half_close:
            channel.readConnectionLost()
        settle()

        output = transport.value()
        for index in continued(output):
            self.assertIn(EXPECT, cases[index].head, "100 Continue only for a request that asked")
        answers = [answer for answer in parse_answers(output) if not answer.interim]
        expected = cases + ([last] if last is not None else [])
        self.assertEqual([a.status for a in answers], [c.status for c in expected])
        accepted = 0
        for request, answer in zip(expected, answers, strict=True):
            if request.name == "stats":
                seen = answer.json()["samples"]["accepted"]
                self.assertEqual(seen, accepted, "stats sees the POSTs before it")
            accepted += request.samples
        self.assertEqual(len(stack.stored()), accepted)
        closing = last is not None or half_close
        self.assertEqual(transport.disconnecting, closing)
        says_close = [a.headers.get(b"connection") == b"close" for a in answers]
        self.assertNotIn(True, says_close[:-1], "only the last answer may say close")
        if last is not None and last.name != "http/1.0 post":  # after a half-close it may have gone already
            self.assertTrue(says_close[-1], "the closing answer says so")
        self.assertEqual(stack.stats.responses.total(), len(expected))


class RegressionTests(SynchronousTestCase):
    def test_head_alone_after_a_held_request(self) -> None:
        """Issue 10: a POST, a GET and the head of a second POST, its body later; all three are answered."""
        stack = Stack()
        channel, transport = stack.connect()
        head, body = split_post(b"/metrics", SAMPLE)
        channel.dataReceived(post(b"/metrics", SAMPLE) + get(b"/ping") + head)
        stack.settle()
        channel.dataReceived(body)
        stack.settle()
        self.assertEqual([a.status for a in parse_answers(transport.value())], [202, 204, 202])
        self.assertEqual([s["name"] for s in stack.stored()], ["cpu.load", "cpu.load"])
        self.assertEqual(json.loads(parse_answers(transport.value())[2].body), {"accepted": 1})


class LostMidPipelineTests(SynchronousTestCase):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        cases=st.lists(st.sampled_from(CASES), min_size=1, max_size=8),
        parsing=st.sampled_from(PARSING),
        data=st.data(),
    )
    def test_connection_lost_anywhere(self, cases: list[Case], parsing: str, data: st.DataObject) -> None:
        """The connection drops at any point of a pipeline, with jobs in the pool: the channel is released
        at once (the factory forgets it, nothing waits for answers), nothing is written after the loss,
        answers that come later are counted and dropped, and nothing raises."""
        stack = parsing_stack(parsing)
        channel, transport = stack.connect()
        stream = b"".join(c.head + c.body for c in cases if not c.waits_for_continue)
        if not stream:
            stream = get(b"/ping")
        lose_at = data.draw(st.integers(0, len(stream)), label="lost after byte")
        channel.dataReceived(stream[:lose_at])
        for _ in range(data.draw(st.integers(0, 3), label="pool steps before the loss")):
            stack.clock.advance(0)
            if stack.pool.jobs:
                stack.pool.run_one(data.draw(st.integers(0, len(stack.pool.jobs) - 1), label="job"))
        written = transport.value()
        transport.loseConnection()
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(stack.factory.channels, set(), "released at once")
        channel.dataReceived(stream[lose_at:])  # bytes the reactor had already read: ignored
        stack.settle()
        self.assertEqual(transport.value(), written, "nothing written after the loss")
        self.assertEqual(stack.clock.getDelayedCalls(), [], "no timer left behind")
