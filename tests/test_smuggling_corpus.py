"""The request-smuggling corpus, run through the real channel: every case agrees with its class.

The corpus (``tests/conformance/smuggling_corpus.json``) is a copy of
``shared/conformance/smuggling_corpus.json``, whole: its ``about``,
``rules`` and ``sources`` say where each case comes from (PortSwigger's
http-request-smuggler, defparam's smuggler, the HTTP Garden, llhttp's and
h11's tests).  It lives in the repository so that a fresh clone runs it.
Each case is the bytes a client sends on one connection (``raw_b64``) and
the class the service must fall in: ``reject``, ``accept`` (as one entry of
its ``accept`` list says) or ``either`` (the RFCs allow both: not counted,
but the service must neither crash nor hang on it).

A run sends a case's bytes, waits until the service is done with them,
half-closes the connection if it is still open, and reads what comes until
the close.  The outcome is judged by these rules, worked out from the
corpus's text (``about``, ``rules``, the fields of a case):

- **reject**: the service answers, then closes the connection by itself
  (before the client's half-close).  The answer is a 4xx, a 505, or a 501
  where ``reject.allow_501``, and nothing is answered after it.  In every
  reject case the request under test is the first one on the connection:
  the samples named in its bytes (``.main``; ``.te`` in a body framed by
  its chunked coding) travel in that request, ``.next`` in the one smuggled
  after it.  So the rejection is the first and only answer, and no sample
  under the case's ``prefix`` may be stored: nothing before the rejection
  legitimately stores one.  A rejection of a ``HEAD`` carries no body; one
  whose request line is too malformed to read the method from may.
- **accept**: one entry of ``accept`` holds.  The final answers (``100
  Continue`` aside) are one per entry of ``responses``, each with one of the
  statuses listed there (``"error"``: any 4xx or 5xx); an answer to a request
  whose ``methods`` entry is ``HEAD`` has no body.  Then, by ``then``:
  ``probe``, the pipelined ``GET /ping`` is answered 204 and nothing more
  comes; ``closed``, the service closes by itself; ``end``, nothing more is
  answered (the appended probe went into the last request's bytes).  With
  ``may_close_after`` N the service may instead close by itself after the
  first N answers.  Either way the samples stored under the prefix are
  exactly ``store``, each once.
- **every case**: the answers are well-formed HTTP/1.1, none is a 500, and
  after the client's half-close the service closes (no hang).

Three runs, each reporting every case that disagrees in one assertion:
through `tests.helpers.Stack` (the real channel, framing, body decoding in
the memory pool and buffer, on a `StringTransport`) fed whole; the same fed
in random pieces with the pool finishing its jobs in random order (seeded
by the case: ``SMUGGLING_SEED`` varies it); and over real sockets on
127.0.0.1 to the whole service (`IngestService` on the reactor, its thread
pool, its segments on disk).  A case listed in `KNOWN_DIFFERENCES` must
differ, and is reported if it stops differing.
"""

from __future__ import annotations

import base64
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from twisted.internet import defer, endpoints, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ingest.config import Settings
from ingest.tap import IngestService
from tests.helpers import Stack
from tests.http_answers import Answer, AnswerReader, MalformedAnswer
from tests.segments import read_segments
from tests.tempdir import temp_path

CORPUS = Path(__file__).parent / "conformance" / "smuggling_corpus.json"

KNOWN_DIFFERENCES: dict[str, str] = {}
"""Cases where the service knowingly differs from the corpus's class: case id, and why (docs/API.md)."""

REJECT, ACCEPT, EITHER = "reject", "accept", "either"
PROBE_STATUS = 204
SPLITS = 4  # random cuttings of each case in the split run
SEED = os.environ.get("SMUGGLING_SEED", "0")
SOCKET_DEADLINE = 10.0  # seconds a case may take on a socket before the client half-closes (then aborts)
SOCKET_CONCURRENCY = 64  # connections open at once in the socket run


@dataclass(frozen=True)
class Expected:
    """One acceptable outcome of a case: an entry of its ``accept`` list."""

    responses: tuple[tuple[int, ...] | str, ...]
    methods: tuple[str, ...]
    then: str
    may_close_after: int | None
    store: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One case of the corpus: the bytes to send, its class, and the outcomes an accepted one may have."""

    id: str
    raw: bytes
    expect: str
    why: str
    first_method: str
    prefix: str
    allow_501: bool
    accept: tuple[Expected, ...]

    @property
    def wanted(self) -> tuple[int, list[bool]] | None:
        """When a socket client may half-close: after this many final answers (read with these HEAD
        flags), or None when only the service's close ends the case (a reject, or every accepted
        outcome closes)."""
        open_ends = [e for e in self.accept if e.then != "closed"] if self.expect != REJECT else []
        if not open_ends:
            return None
        entry = max(open_ends, key=lambda e: len(e.responses) + (e.then == "probe"))
        return len(entry.responses) + (entry.then == "probe"), [m == "HEAD" for m in entry.methods]


@cache
def corpus() -> dict[str, Any]:
    """The corpus file, read once."""
    document: dict[str, Any] = json.loads(CORPUS.read_text(encoding="utf-8"))
    return document


def load() -> list[Case]:
    cases = []
    for item in corpus()["cases"]:
        accept = tuple(
            Expected(
                tuple(r if isinstance(r, str) else tuple(r) for r in entry["responses"]),
                tuple(entry["methods"]),
                entry["then"],
                entry["may_close_after"],
                tuple(entry["store"]),
            )
            for entry in item["accept"] or ()
        )
        cases.append(
            Case(
                item["id"],
                base64.b64decode(item["raw_b64"]),
                item["expect"],
                item["why"],
                item["first_method"],
                item["prefix"],
                bool((item["reject"] or {}).get("allow_501")),
                accept,
            )
        )
    return cases


# -- the judge ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one run of a case observed.

    `output` is every byte the service sent; `half_closed_at` the length of
    `output` when the client half-closed (None: the service closed first);
    `closed` whether the connection ended at last; `stored` the names of the
    samples stored under the case's prefix; `raised` what the run raised, if
    it did.
    """

    output: bytes
    half_closed_at: int | None
    closed: bool
    stored: tuple[str, ...]
    raised: str | None = None


@dataclass(frozen=True)
class _Read:
    answers: list[Answer]  # final answers only
    before_half_close: int  # how many of them were sent before the client half-closed
    malformed: str | None


def _read(outcome: Outcome, heads: Sequence[bool]) -> _Read:
    """The final answers in `outcome`, the i-th read as an answer to a HEAD request where `heads[i]`."""
    reader = AnswerReader()
    reader.feed(outcome.output)
    reader.close()
    answers: list[Answer] = []
    before = 0
    size = len(outcome.output)
    try:
        while (answer := reader.next_answer(len(answers) < len(heads) and heads[len(answers)])) is not None:
            if answer.interim:
                continue
            answers.append(answer)
            if outcome.half_closed_at is None or size - len(reader.rest) <= outcome.half_closed_at:
                before = len(answers)
    except MalformedAnswer as error:
        return _Read(answers, before, str(error)[:160])
    return _Read(answers, before, None)


def _shown(read: _Read) -> str:
    shown = [str(a.status) for a in read.answers]
    if read.before_half_close < len(shown):
        shown.insert(read.before_half_close, "|half-close|")
    return " ".join(shown) or "no answer"


def _why_not_rejected(case: Case, outcome: Outcome) -> str | None:
    read = _read(outcome, [case.first_method == "HEAD"])
    if read.malformed is not None and case.first_method == "HEAD":
        read = _read(outcome, [False])  # a request line too malformed to tell the method: a body follows
    if read.malformed is not None:
        return f"malformed answers: {read.malformed}"
    if outcome.half_closed_at is not None:
        return f"{_shown(read)}, not closed by the service"
    if len(read.answers) != 1:
        return f"{_shown(read)}, closed"
    status = read.answers[0].status
    if not (400 <= status < 500 or status == 505 or (status == 501 and case.allow_501)):
        return f"{status}, closed"
    if outcome.stored:
        return f"{status}, closed, stored {list(outcome.stored)}"
    return None


def _matches(answers: Sequence[Answer], responses: Sequence[tuple[int, ...] | str]) -> bool:
    return len(answers) == len(responses) and all(
        (a.status >= 400 if r == "error" else a.status in r) for a, r in zip(answers, responses, strict=True)
    )


def _why_not_accepted(expected: Expected, outcome: Outcome) -> str | None:
    read = _read(outcome, [method == "HEAD" for method in expected.methods])
    if read.malformed is not None:
        return f"malformed answers: {read.malformed}"
    closed_itself = outcome.half_closed_at is None
    responses = [*expected.responses, *([(PROBE_STATUS,)] if expected.then == "probe" else [])]
    whole = _matches(read.answers, responses) and (
        closed_itself if expected.then == "closed" else read.before_half_close == len(read.answers)
    )
    cut = expected.may_close_after
    early = cut is not None and closed_itself and _matches(read.answers, responses[:cut])
    seen = f"{_shown(read)}{', closed' if closed_itself else ''}"
    if not (whole or early):
        return seen
    if sorted(outcome.stored) != sorted(expected.store):
        return f"{seen}, stored {list(outcome.stored)}"
    return None


def mismatch(case: Case, outcome: Outcome) -> str | None:
    """None when `outcome` agrees with the case's class, else what happened, in a few words."""
    if outcome.raised is not None:
        return f"raised {outcome.raised}"
    if not outcome.closed:
        return "still open after the client's half-close"
    if any(answer.status == 500 for answer in _read(outcome, []).answers):
        return f"a 500: {_shown(_read(outcome, []))}"
    if case.expect == EITHER:
        return None
    if case.expect == REJECT:
        return _why_not_rejected(case, outcome)
    reasons = []
    for expected in case.accept:
        reason = _why_not_accepted(expected, outcome)
        if reason is None:
            return None
        reasons.append(reason)
    return " / ".join(dict.fromkeys(reasons))


def verdict(cases: Sequence[Case], outcomes: Sequence[Outcome]) -> tuple[str, list[str]]:
    """The score (counted cases agreeing / counted) and a line for every case that is not as expected:
    one that disagrees (unless `KNOWN_DIFFERENCES` lists it), or a listed one that now agrees."""
    counted = agreeing = 0
    lines = []
    for case, outcome in zip(cases, outcomes, strict=True):
        seen = mismatch(case, outcome)
        if case.expect != EITHER:
            counted += 1
            agreeing += seen is None
        known = KNOWN_DIFFERENCES.get(case.id)
        if seen is not None and known is None:
            lines.append(f"{case.id} (expected {case.expect}): {seen}  [{case.why}]")
        elif seen is None and known is not None:
            lines.append(f"{case.id}: agrees now; take it out of KNOWN_DIFFERENCES ({known})")
    return f"{agreeing} of {counted} counted cases agree", lines


def assert_agrees(
    test: SynchronousTestCase, cases: Sequence[Case], outcomes: Sequence[Outcome], run: str
) -> None:
    """One failure for the whole run, listing every case not as expected (each line once)."""
    score, lines = verdict(cases, outcomes)
    if lines:
        test.fail(f"{run}: {score}; not as expected:\n" + "\n".join(dict.fromkeys(lines)))


# -- runs on a StringTransport -----------------------------------------------------------------------


def run_on_stack(case: Case, pieces: Sequence[bytes], rng: random.Random | None = None) -> Outcome:
    """Feed `pieces` to a fresh channel of the whole front (`Stack`), then half-close if it is open.

    With `rng`, between pieces the pool finishes some of its jobs, picked at
    random; without, it settles after the last piece.
    """
    stack = Stack()
    channel, transport = stack.connect()

    def pool_steps() -> None:
        assert rng is not None
        for _ in range(rng.randrange(3)):
            stack.clock.advance(0)
            if stack.pool.jobs:
                stack.pool.run_one(rng.randrange(len(stack.pool.jobs)))

    try:
        for piece in pieces:
            if rng is not None:
                pool_steps()
            channel.dataReceived(piece)
        stack.settle()
        half_closed_at = None
        if not transport.disconnecting:
            half_closed_at = len(transport.value())
            channel.readConnectionLost()
            stack.settle()
    except Exception as error:  # reported with the case, beside every other case's outcome
        return Outcome(transport.value(), None, False, (), repr(error))
    stored = tuple(s["name"] for s in stack.stored() if s["name"].startswith(case.prefix))
    return Outcome(transport.value(), half_closed_at, transport.disconnecting, stored)


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    """`data` cut at 1 to 8 random offsets (a byte by byte feed one time in four)."""
    if rng.randrange(4) == 0:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(rng.randint(1, 8), len(data) - 1)))
    return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]


class StackCorpusTests(SynchronousTestCase):
    def test_fed_whole(self) -> None:
        """Every case, sent in one piece, is served as its class says (the module docstring's rules)."""
        cases = load()
        assert_agrees(self, cases, [run_on_stack(case, [case.raw]) for case in cases], "fed whole")

    def test_fed_in_random_pieces(self) -> None:
        """Every case, cut at random points (`SPLITS` cuttings each), with the pool finishing its jobs in
        random order between the pieces, is served as when it is sent whole."""
        cases = load()
        every_case: list[Case] = []
        outcomes = []
        for case in cases:
            for split in range(SPLITS):
                rng = random.Random(f"{SEED}:{case.id}:{split}")
                every_case.append(case)
                outcomes.append(run_on_stack(case, random_pieces(case.raw, rng), rng))
        assert_agrees(self, every_case, outcomes, f"fed in pieces, {SPLITS} cuttings a case (seed {SEED})")


# -- the run over real sockets -------------------------------------------------------------------


class CorpusClient(Protocol):
    """Sends a case's bytes, reads the answers, half-closes once the service is done (`Case.wanted`)."""

    def __init__(self, case: Case, done: Deferred[None]) -> None:
        self.case = case
        self.output = b""
        self.half_closed_at: int | None = None
        self.closed = False  # the service closed the connection (not the client's abort)
        self._aborted = False
        self._done = done

    def connectionMade(self) -> None:
        self.transport.write(self.case.raw)

    def dataReceived(self, data: bytes) -> None:
        self.output += data
        wanted = self.case.wanted
        if wanted is not None and self.half_closed_at is None and finals(self.output, wanted[1]) >= wanted[0]:
            self.half_close()

    def half_close(self) -> None:
        if self.half_closed_at is None and not self.closed:
            self.half_closed_at = len(self.output)
            self.transport.loseWriteConnection()

    def abort(self) -> None:
        """The service did not close even after the half-close: a hang, which the outcome shows."""
        self._aborted = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = not self._aborted
        self._done.callback(None)


def finals(output: bytes, heads: Sequence[bool]) -> int:
    """How many final answers `output` holds so far (the i-th read as a HEAD answer where `heads[i]`)."""
    reader = AnswerReader()
    reader.feed(output)
    count = 0
    try:
        while (answer := reader.next_answer(count < len(heads) and heads[count])) is not None:
            count += not answer.interim
    except MalformedAnswer:
        pass
    return count


class SocketCorpusTests(TestCase):
    timeout = 300  # a run where every case hung would take 9 rounds of 15 s: report it, do not time out

    @inlineCallbacks
    def test_real_sockets(self) -> Iterator[Deferred[Any]]:
        """Every case, over a real connection to the whole service on 127.0.0.1 (its parse threads, its
        segments on disk), is served as its class says; stored samples are read from the segments."""
        data_dir = temp_path(self)
        service = IngestService(
            Settings(port="tcp:0:interface=127.0.0.1", data_dir=data_dir, threads=4, flush_interval=0.05),
            reactor,
        )
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", service.port.getHost().port)
        cases = load()
        clients: list[CorpusClient] = []
        semaphore = defer.DeferredSemaphore(SOCKET_CONCURRENCY)

        @inlineCallbacks
        def run(case: Case) -> Iterator[Deferred[Any]]:
            done: Deferred[None] = Deferred()
            client = CorpusClient(case, done)
            clients.append(client)
            yield endpoints.connectProtocol(endpoint, client)
            give_up = [
                reactor.callLater(SOCKET_DEADLINE, client.half_close),
                reactor.callLater(1.5 * SOCKET_DEADLINE, client.abort),
            ]
            yield done
            for call in give_up:
                if call.active():
                    call.cancel()

        yield defer.gatherResults([semaphore.run(run, case) for case in cases], consumeErrors=True)
        yield service.stopService()
        names = [sample["name"] for sample in read_segments(data_dir)]
        outcomes = [
            Outcome(
                client.output,
                client.half_closed_at,
                client.closed,
                tuple(name for name in names if name.startswith(client.case.prefix)),
            )
            for client in clients
        ]
        assert_agrees(self, [client.case for client in clients], outcomes, "real sockets")


# -- the corpus and the judge themselves -------------------------------------------------------------


def _answer(status: int, close: bool = False) -> bytes:
    body = b"" if status == 204 else b"{}"
    connection = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), connection, body)


class JudgeTests(SynchronousTestCase):
    """The corpus is whole, and the judge holds its rules (a lenient judge would pass anything)."""

    def case(self, expect: str, *accept: Expected, first_method: str = "POST") -> Case:
        return Case("c", b"", expect, "why", first_method, "smug.c.", False, accept)

    def test_corpus_is_whole(self) -> None:
        """The copy keeps its provenance, and its cases are those its header counts."""
        document = corpus()
        self.assertTrue({"about", "rules", "probe", "sources", "counts"} <= set(document))
        cases = load()
        counts = {kind: sum(case.expect == kind for case in cases) for kind in (REJECT, ACCEPT, EITHER)}
        self.assertEqual(counts, document["counts"])
        self.assertEqual(len({case.id for case in cases}), len(cases), "ids are unique")
        self.assertEqual(set(KNOWN_DIFFERENCES) - {case.id for case in cases}, set())

    def test_reject(self) -> None:
        """A reject is one 4xx answer and the service's close, with nothing of the case stored."""
        reject = self.case(REJECT)
        self.assertIsNone(mismatch(reject, Outcome(_answer(400, close=True), None, True, ())))
        self.assertIsNotNone(mismatch(reject, Outcome(_answer(400), 7, True, ())), "closed only after ours")
        self.assertIsNotNone(mismatch(reject, Outcome(_answer(400, close=True), None, True, ("smug.c.te",))))
        self.assertIsNotNone(
            mismatch(reject, Outcome(_answer(202) + _answer(400, close=True), None, True, ()))
        )
        self.assertIsNotNone(mismatch(reject, Outcome(_answer(501, close=True), None, True, ())), "no 501")
        self.assertIsNotNone(mismatch(reject, Outcome(_answer(400), None, False, ())), "a hang")
        self.assertIsNotNone(mismatch(reject, Outcome(b"", None, True, ())), "a close without an answer")
        head = self.case(REJECT, first_method="HEAD")
        self.assertIsNone(mismatch(head, Outcome(_answer(400, close=True)[:-2], None, True, ())))

    def test_accept(self) -> None:
        """An accepted case gets the answers listed, the probe's 204 (or the close where it may come),
        and stores exactly the samples listed."""
        probe = Expected(((202,), "error"), ("POST", "GET"), "probe", 1, ("smug.c.main",))
        accept = self.case(ACCEPT, probe)
        answers = _answer(202) + _answer(404) + _answer(204)
        end = len(answers)
        self.assertIsNone(mismatch(accept, Outcome(answers, end, True, ("smug.c.main",))))
        self.assertIsNone(mismatch(accept, Outcome(_answer(202, close=True), None, True, ("smug.c.main",))))
        self.assertIsNotNone(mismatch(accept, Outcome(answers, end, True, ())), "not stored")
        self.assertIsNotNone(mismatch(accept, Outcome(answers, end, True, ("smug.c.main",) * 2)), "twice")
        self.assertIsNotNone(mismatch(accept, Outcome(answers, 0, True, ("smug.c.main",))), "after ours")
        self.assertIsNotNone(
            mismatch(accept, Outcome(_answer(202) + _answer(204), 0, True, ("smug.c.main",)))
        )
        closed = self.case(ACCEPT, Expected(((204,),), ("GET",), "closed", None, ()))
        self.assertIsNone(mismatch(closed, Outcome(_answer(204, close=True), None, True, ())))
        self.assertIsNotNone(mismatch(closed, Outcome(_answer(204), 0, True, ())), "the service must close")

    def test_either(self) -> None:
        """An either case agrees with any outcome but a 500, a hang or a crash of the run."""
        either = self.case(EITHER)
        self.assertIsNone(mismatch(either, Outcome(_answer(400, close=True), None, True, ())))
        self.assertIsNotNone(mismatch(either, Outcome(_answer(500, close=True), None, True, ())))
        self.assertIsNotNone(mismatch(either, Outcome(b"", 0, False, ())))
        self.assertIsNotNone(mismatch(either, Outcome(b"", None, True, (), "ValueError()")))
