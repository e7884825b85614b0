"""The answer order (`ingest.pipeline`): its rules one by one, then a model-based test of every interleaving.

The model-based test drives a `Pipeline` as the channel does (actions
carried out in order, those they lead to queued behind them) with
hypothesis choosing the events: heads (safe or not, closing or not,
expecting ``100 Continue`` or not), bodies (sent only after the continue
they wait for), refusals, framing errors, completions of running requests
in any order (some at once, as ``GET /ping`` answers), half-closes and
lost connections.  Against it stands a model that is trivially right:
the requests in the order they were opened.  After every step the
actions seen must respect the order; at the end, once the client stops and
the pool runs dry, every request must be answered exactly once, in order,
with none left held, unless the connection closed first.

``HYPOTHESIS_EXAMPLES`` sets the number of examples (200 in CI; the closing
note of issue 10 gives a run of 20,000).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.trial.unittest import SynchronousTestCase

from ingest.pipeline import (
    HELD,
    READY,
    RECEIVING,
    RUNNING,
    Action,
    Close,
    Dispatch,
    Pipeline,
    SendContinue,
    Slot,
    Write,
)

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "200"))


class Request(Slot):
    """A slot with the test's bookkeeping: its number, and whether it answers as soon as it runs."""

    __slots__ = ("answers_at_once", "number")

    def __init__(
        self, number: int, safe: bool, close: bool, expect: bool, answers_at_once: bool = False
    ) -> None:
        super().__init__(safe, close, expect)
        self.number = number
        self.answers_at_once = answers_at_once


def request(number: int, safe: bool = False, close: bool = False, expect: bool = False) -> Request:
    return Request(number, safe, close, expect)


class RuleTests(SynchronousTestCase):
    def test_unsafe_requests_run_side_by_side_and_answer_in_order(self) -> None:
        """Two POSTs run at once; the second's answer waits for the first's, then both go in order."""
        pipeline: Pipeline[Request] = Pipeline(16)
        first, second = request(1), request(2)
        self.assertEqual(pipeline.open(first), ())
        self.assertEqual(pipeline.complete(first), [Dispatch((first,))])
        pipeline.open(second)
        self.assertEqual(pipeline.complete(second), [Dispatch((second,))])
        self.assertEqual(pipeline.answer(second), ())
        self.assertEqual(pipeline.answer(first), [Write((first, False)), Write((second, False))])
        self.assertEqual(len(pipeline.slots), 0)

    def test_safe_request_waits_for_the_answers_before_it(self) -> None:
        """A GET after a running POST is held; the POST's answer releases it, after the POST's write."""
        pipeline: Pipeline[Request] = Pipeline(16)
        post, ping = request(1), request(2, safe=True)
        pipeline.open(post)
        pipeline.complete(post)
        pipeline.open(ping)
        self.assertEqual(pipeline.complete(ping), ())
        self.assertEqual(pipeline.held, 1)
        self.assertEqual(pipeline.answer(post), [Write((post, False)), Dispatch((ping,))])

    def test_held_request_released_by_an_answer_with_a_head_open_after_it(self) -> None:
        """The hang of issue 10: POST, GET, and a second POST's head only.  The first POST's answer runs
        the GET, though the second POST is still receiving; the second POST's body then runs it."""
        pipeline: Pipeline[Request] = Pipeline(16)
        post, ping, later = request(1), request(2, safe=True), request(3)
        pipeline.open(post)
        pipeline.complete(post)
        pipeline.open(ping)
        pipeline.complete(ping)
        pipeline.open(later)
        self.assertEqual(pipeline.answer(post), [Write((post, False)), Dispatch((ping,))])
        self.assertEqual(pipeline.answer(ping), [Write((ping, False))])
        self.assertEqual(pipeline.complete(later), [Dispatch((later,))])
        self.assertEqual(pipeline.answer(later), [Write((later, False))])
        self.assertEqual((len(pipeline.slots), pipeline.held), (0, 0))

    def test_max_requests_makes_the_nth_request_the_last(self) -> None:
        """Rule 6: with max_requests 2, the first request keeps the connection, the second (N) is the last:
        its answer closes, after the first's; nothing more may open.  With 0, nothing closes."""
        pipeline: Pipeline[Request] = Pipeline(16, max_requests=2)
        first, second = request(1), request(2)
        pipeline.open(first)
        self.assertTrue(pipeline.accepting)  # N - 1
        pipeline.open(second)
        self.assertFalse(pipeline.accepting)  # N
        self.assertRaises(ValueError, pipeline.open, request(3))
        pipeline.complete(first)
        pipeline.complete(second)
        self.assertEqual(pipeline.answer(second), ())
        self.assertEqual(pipeline.answer(first), [Write((first, False)), Write((second, True)), Close()])
        unlimited: Pipeline[Request] = Pipeline(16)
        for number in range(100):
            unlimited.open(request(number))
        self.assertTrue(unlimited.accepting)

    def test_max_age_makes_the_first_request_past_it_the_last(self) -> None:
        """Rule 6: a request opened before max_age keeps the connection, the one opened at it is the last;
        a request in flight before it is answered first, without closing."""
        pipeline: Pipeline[Request] = Pipeline(16, max_age=300.0)
        early, late = request(1), request(2)
        pipeline.open(early, age=299.9)
        pipeline.complete(early)
        self.assertTrue(pipeline.accepting)
        pipeline.open(late, age=300.0)
        self.assertFalse(pipeline.accepting)
        pipeline.complete(late)
        self.assertEqual(pipeline.answer(late), ())
        self.assertEqual(pipeline.answer(early), [Write((early, False)), Write((late, True)), Close()])

    def test_unsafe_request_after_a_held_one_waits_its_turn(self) -> None:
        """Requests run in arrival order: a POST after a held GET runs only once the GET does."""
        pipeline: Pipeline[Request] = Pipeline(16)
        post, ping, later = request(1), request(2, safe=True), request(3)
        for slot in (post, ping, later):
            pipeline.open(slot)
            pipeline.complete(slot)
        self.assertEqual(pipeline.held, 2)
        self.assertEqual(pipeline.answer(post), [Write((post, False)), Dispatch((ping,)), Dispatch((later,))])

    def test_continue_when_first_and_not_before(self) -> None:
        """100 Continue goes at once to the oldest request, and after the answers before it to a later one."""
        pipeline: Pipeline[Request] = Pipeline(16)
        waiting = request(1, expect=True)
        self.assertEqual(pipeline.open(waiting), [SendContinue((waiting,))])
        pipeline.complete(waiting)
        behind = request(2, expect=True)
        self.assertEqual(pipeline.open(behind), ())
        self.assertEqual(pipeline.answer(waiting), [Write((waiting, False)), SendContinue((behind,))])

    def test_no_continue_once_the_body_is_here(self) -> None:
        """A client that sent its body without waiting gets no 100 Continue."""
        pipeline: Pipeline[Request] = Pipeline(16)
        first, eager = request(1), request(2, expect=True)
        pipeline.open(first)
        pipeline.complete(first)
        pipeline.open(eager)
        pipeline.complete(eager)
        actions = list(pipeline.answer(first))
        self.assertNotIn(SendContinue((eager,)), actions)

    def test_closing_answer_ends_everything(self) -> None:
        """An answer that closes is the last one written; what runs after it is never written."""
        pipeline: Pipeline[Request] = Pipeline(16)
        first, second = request(1), request(2)
        for slot in (first, second):
            pipeline.open(slot)
            pipeline.complete(slot)
        self.assertEqual(pipeline.answer(first, close=True), [Write((first, True)), Close()])
        self.assertTrue(pipeline.closed)
        self.assertFalse(pipeline.accepting)
        self.assertEqual(pipeline.answer(second), ())

    def test_end_closes_after_the_last_answer_or_at_once(self) -> None:
        """After `end` the last open request's answer says close; with none open the close is at once."""
        pipeline: Pipeline[Request] = Pipeline(16)
        only = request(1)
        pipeline.open(only)
        pipeline.complete(only)
        self.assertEqual(pipeline.end(), ())
        self.assertEqual(pipeline.answer(only), [Write((only, True)), Close()])
        self.assertEqual(Pipeline[Request](16).end(), [Close()])

    def test_retire_closes_after_the_last_open_request(self) -> None:
        """Rule 7: retired with requests open, the last of them closes; nothing more may open."""
        pipeline: Pipeline[Request] = Pipeline(16)
        first, second = request(1), request(2)
        for slot in (first, second):
            pipeline.open(slot)
            pipeline.complete(slot)
        pipeline.retire()
        self.assertFalse(pipeline.accepting)
        self.assertRaises(ValueError, pipeline.open, request(3))
        self.assertEqual(pipeline.answer(first), [Write((first, False))])
        self.assertEqual(pipeline.answer(second), [Write((second, True)), Close()])

    def test_retire_with_none_open_makes_the_next_request_the_last(self) -> None:
        """Rule 7: retired idle, the connection stays open for one more request, whose answer closes."""
        pipeline: Pipeline[Request] = Pipeline(16)
        earlier, last = request(1), request(2)
        pipeline.open(earlier)
        pipeline.complete(earlier)
        self.assertEqual(pipeline.answer(earlier), [Write((earlier, False))])
        pipeline.retire()
        self.assertTrue(pipeline.accepting)
        self.assertEqual(pipeline.open(last), ())
        self.assertFalse(pipeline.accepting)
        self.assertEqual(pipeline.complete(last), [Dispatch((last,))])
        self.assertEqual(pipeline.answer(last), [Write((last, True)), Close()])

    def test_lost_releases_at_once(self) -> None:
        """A lost connection keeps nothing: no slot owed or held, and later answers do nothing."""
        pipeline: Pipeline[Request] = Pipeline(16)
        post, ping = request(1), request(2, safe=True)
        for slot in (post, ping):
            pipeline.open(slot)
            pipeline.complete(slot)
        pipeline.lost()
        self.assertEqual((len(pipeline.slots), pipeline.held), (0, 0))
        self.assertEqual(pipeline.answer(post), ())
        self.assertEqual(pipeline.end(), ())

    def test_answered_twice_is_written_once(self) -> None:
        """A second answer for the same request changes nothing."""
        pipeline: Pipeline[Request] = Pipeline(16)
        only = request(1)
        pipeline.open(only)
        pipeline.complete(only)
        self.assertEqual(pipeline.answer(only), [Write((only, False))])
        self.assertEqual(pipeline.answer(only), ())

    def test_open_after_the_last_request_is_refused(self) -> None:
        """A request after a closing one cannot be opened: the channel reads nothing past it."""
        pipeline: Pipeline[Request] = Pipeline(16)
        pipeline.open(request(1, close=True))
        self.assertRaises(ValueError, pipeline.open, request(2))

    def test_full_at_the_limit(self) -> None:
        """`full` at `limit` open requests, not before; an answer written makes room."""
        pipeline: Pipeline[Request] = Pipeline(2)
        first, second = request(1), request(2)
        pipeline.open(first)
        self.assertFalse(pipeline.full)
        pipeline.complete(first)
        pipeline.open(second)
        self.assertTrue(pipeline.full)
        pipeline.answer(first)
        self.assertFalse(pipeline.full)


@dataclass
class Client:
    """What the test has seen, kept beside the pipeline: the trivially correct model it is checked against."""

    opened: list[Request] = field(default_factory=list)
    dispatched: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    continued: set[int] = field(default_factory=set)
    answered: set[int] = field(default_factory=set)
    closed: bool = False
    last: int | None = None  # the request whose answer said close


class PipelineMachine(RuleBasedStateMachine):
    """Hypothesis drives one connection's pipeline; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.pipeline: Pipeline[Request] = Pipeline(4)
        self.seen = Client()
        self.receiving: Request | None = None
        self.running: list[Request] = []
        self.lost = False
        self.busy = False
        self.queued: list[Action[Request]] = []

    # -- carrying out actions, as the channel does --------------------------------

    def carry_out(self, actions: tuple[()] | list[Action[Request]]) -> None:
        if self.busy:
            self.queued += actions
            return
        self.busy = True
        try:
            self.perform(list(actions))
            while self.queued:
                queued, self.queued = self.queued, []
                self.perform(queued)
        finally:
            self.busy = False

    def perform(self, actions: list[Action[Request]]) -> None:
        seen = self.seen
        for action in actions:
            assert not self.lost, f"{action} after the connection was lost"
            assert not seen.closed, f"{action} after the close"
            if isinstance(action, Write):
                written, last = action
                number = written.number
                assert number in seen.answered, f"request {number} written before it was answered"
                assert number not in seen.written, f"request {number} written twice"
                expected = [slot.number for slot in seen.opened[: len(seen.written) + 1]]
                assert [*seen.written, number] == expected, f"{number} out of order after {seen.written}"
                seen.written.append(number)
                if last:
                    seen.last = number
            elif isinstance(action, Dispatch):
                (slot,) = action
                assert slot.state == RUNNING
                before = [s.number for s in seen.opened if s.number < slot.number]
                skipped = [n for n in before if n not in seen.dispatched and n not in seen.answered]
                assert not skipped, f"request {slot.number} run before {skipped}"
                if slot.safe:
                    unanswered = [n for n in before if n not in seen.answered]
                    assert not unanswered, f"safe request {slot.number} run before {unanswered} answered"
                seen.dispatched.append(slot.number)
                if slot.answers_at_once:
                    self.answer(slot)
                else:
                    self.running.append(slot)
            elif isinstance(action, SendContinue):
                (slot,) = action
                assert slot.number not in seen.continued, "100 Continue twice"
                assert slot is self.receiving, "100 Continue for a body already received"
                assert seen.written == [s.number for s in seen.opened if s.number < slot.number]
                seen.continued.add(slot.number)
            else:
                assert isinstance(action, Close)
                everything = len(seen.written) == len(seen.opened)
                assert seen.last is not None or everything, "closed without a last answer saying so"
                seen.closed = True

    def answer(self, slot: Request, close: bool = False) -> None:
        assert slot.number not in self.seen.answered
        self.seen.answered.add(slot.number)
        self.carry_out(self.pipeline.answer(slot, close))

    # -- the client ----------------------------------------------------------------

    def open_for_requests(self) -> bool:
        return not self.lost and self.receiving is None and self.pipeline.accepting and not self.pipeline.full

    @precondition(open_for_requests)
    @rule(safe=st.booleans(), close=st.integers(0, 9), expect=st.booleans(), at_once=st.booleans())
    def head(self, safe: bool, close: int, expect: bool, at_once: bool) -> None:
        """A head arrives (1 in 10 says Connection: close)."""
        slot = Request(len(self.seen.opened) + 1, safe, close == 0, expect and not safe, at_once)
        self.seen.opened.append(slot)
        self.receiving = slot
        self.carry_out(self.pipeline.open(slot))

    @precondition(open_for_requests)
    @rule(safe=st.booleans(), close=st.integers(0, 9), at_once=st.booleans())
    def request(self, safe: bool, close: int, at_once: bool) -> None:
        """A whole request arrives, head and body (the common pipelining client)."""
        self.head(safe, close, False, at_once)
        self.body()

    def can_send_body(self) -> bool:
        slot = self.receiving
        return (
            slot is not None
            and not self.lost
            and not self.seen.closed
            and (not slot.expect_continue or slot.number in self.seen.continued)
        )

    @precondition(can_send_body)
    @rule()
    def body(self) -> None:
        """The body arrives, after the 100 Continue its client waits for."""
        slot = self.receiving
        assert slot is not None
        self.receiving = None
        self.carry_out(self.pipeline.complete(slot))

    @precondition(can_send_body)
    @rule(roll=st.integers(0, 3))
    def refused(self, roll: int) -> None:
        """The request is answered without running: refused from its head, its body read and dropped
        (one roll in four)."""
        if roll:
            return
        slot = self.receiving
        assert slot is not None
        self.receiving = None
        self.answer(slot)

    @precondition(lambda self: self.receiving is not None and not self.lost and not self.seen.closed)
    @rule(roll=st.integers(0, 3))
    def framing_error(self, roll: int) -> None:
        """A framing error mid-request, or a refusal of a client waiting for 100 Continue: an answer that
        closes the connection, whether or not the body came (one roll in four)."""
        if roll:
            return
        slot = self.receiving
        assert slot is not None
        self.receiving = None
        self.answer(slot, close=True)

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data(), close=st.integers(0, 19))
    def finish(self, data: st.DataObject, close: int) -> None:
        """The pool finishes any running request (1 in 20 answers closing the connection)."""
        slot = data.draw(st.sampled_from(self.running))
        self.running.remove(slot)
        self.answer(slot, close=close == 0)

    @precondition(lambda self: not self.lost and self.receiving is None)
    @rule(roll=st.integers(0, 3))
    def half_close(self, roll: int) -> None:
        """The peer half-closes between requests (or the service drains): close after the answers owed.

        One roll in four: ends of the connection are rarer than its traffic, so long runs get explored.
        """
        if roll == 0:
            self.carry_out(self.pipeline.end())

    @precondition(lambda self: not self.lost)
    @rule(roll=st.integers(0, 3))
    def retire(self, roll: int) -> None:
        """The service stops and retires the connection (one roll in four): one more answer closes it."""
        if roll == 0:
            self.pipeline.retire()

    @precondition(lambda self: not self.lost)
    @rule(roll=st.integers(0, 3))
    def connection_lost(self, roll: int) -> None:
        """The connection is gone: everything is released at once (one roll in four)."""
        if roll:
            return
        self.lost = True
        self.pipeline.lost()
        self.running.clear()
        self.receiving = None

    @precondition(lambda self: self.lost)
    @rule()
    def wait(self) -> None:
        """Nothing happens any more (a lost connection still needs a next step)."""

    # -- what must hold ------------------------------------------------------------

    @invariant()
    def counts_agree(self) -> None:
        pipeline = self.pipeline
        if self.lost or self.seen.closed:
            assert (len(pipeline.slots), pipeline.held) == (0, 0), "a closed connection keeps nothing"
            return
        assert len(pipeline.slots) == len(self.seen.opened) - len(self.seen.written)
        states = [slot.state for slot in self.seen.opened if slot.number not in self.seen.written]
        assert all(state in (RECEIVING, HELD, RUNNING, READY) for state in states)

    @invariant()
    def nothing_held_without_cause(self) -> None:
        """A held request waits for a request before it: one not yet run, or (if safe) not yet answered."""
        if self.lost or self.seen.closed or self.busy:
            return
        earlier_not_run = earlier_unanswered = False
        for slot in self.seen.opened:
            if slot.number in self.seen.written:
                continue
            if slot.state == HELD:
                waits = earlier_not_run or (slot.safe and earlier_unanswered)
                assert waits, f"{slot.number} held for nothing"
            earlier_not_run = earlier_not_run or slot.state in (RECEIVING, HELD)
            earlier_unanswered = earlier_unanswered or slot.state != READY

    def teardown(self) -> None:
        """The client sends nothing new and the pool runs dry: then everything owed has been answered."""
        while not self.lost and not self.seen.closed:
            if self.running:
                self.answer(self.running.pop(0))
            elif self.can_send_body():
                self.body()
            else:
                break
        seen = self.seen
        if self.lost:
            return
        assert self.pipeline.held == 0, "a request left held"
        if seen.closed:
            assert seen.last is None or seen.written[-1] == seen.last, "written after the last answer"
            return
        unanswered = [s.number for s in seen.opened if s.number not in seen.written]
        if self.receiving is not None:  # a body never sent: only that request and none after it
            assert unanswered == [self.receiving.number], f"{unanswered} left behind"
        else:
            assert unanswered == [], f"{unanswered} never written"


PipelineMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=50, deadline=None)


class PipelineModelTests(PipelineMachine.TestCase):
    """Every interleaving hypothesis finds keeps the order and answers everything (module docstring)."""
