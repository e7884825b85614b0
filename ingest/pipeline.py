"""The answer order of one HTTP/1.1 connection, pure: which request may run, which answer may go out.

Every decision about the order of a connection's requests and answers lives
here (h11's rule for its ``_state.py``); `ingest.protocol` tells this module
what happened and carries out the actions it gets back.  No Twisted import,
no clock, no I/O: a model-based test drives it through every interleaving
(``tests/test_pipeline.py``).

A request is a `Slot` from the moment its head is complete until its answer
is written.  Its state goes::

    RECEIVING --complete--> HELD --its turn--> RUNNING --answer--> READY --its turn--> WRITTEN
        |                                                            ^
        +---------------------------- answer ------------------------+
          (refused from its head and its body dropped, or a framing error)

The rules:

1. Answers are written in the order the heads arrived, each exactly once.
2. Requests run (`Dispatch`) in the order they arrived.  A safe request
   (GET, HEAD) runs only once every request before it is answered, so a
   pipelined ``GET /stats`` sees the effects of the POSTs sent before it
   (RFC 9112 section 9.3.2 lets only safe requests run side by side; unsafe
   ones run side by side here because the parse queue applies their
   effects in submission order).  Nothing else holds a request back, so a
   held request is released by the answer it waits for, whenever it comes.
3. A ``100 Continue`` (`SendContinue`) goes out when its request is the
   oldest one unanswered and its body has not been received: never before
   the answers it follows, never after the body it asked about.
4. After an answer that closes the connection (`Write` with ``last``,
   then `Close`) nothing more is written or run.
5. `end` (no more requests will come: the peer half-closed, or the service
   is stopping) closes after the last open request is answered, at once if
   none is open.
6. Recycling (``--max-requests-per-connection``, ``--max-connection-age``,
   so that keep-alive clients behind a load balancer move to other nodes):
   the request opened as the connection's `max_requests`-th, or at an age
   of `max_age` seconds or more, is its last, as if it said ``Connection:
   close``.  Its answer says so and the connection closes after it; the
   requests opened before it are in flight and answered first, in order;
   nothing after it is read (a pipelining client retries what was not
   answered on a new connection, as RFC 9112 section 9.3.2 asks).  So no
   request in flight is cut, and every connection answers at most
   `max_requests`.  An idle connection past its age is not closed for that:
   its next request is answered with ``Connection: close`` (closing it
   first could cut a request on its way).
7. `retire` (the service is stopping and hands its port over, so clients
   must move to a new connection): the connection closes after one more
   answer.  With requests open, the last of them is the last; with none,
   the next request opened is, as in rule 6.  So a request the client sent
   before it saw a ``Connection: close`` is read and answered, never cut.

`lost` (the connection is gone) releases everything at once: nothing held
waits for answers that nobody can read.

Each event returns the actions to carry out, in order, writes before
dispatches.  An action may lead back here (a dispatched request that
answers at once): the caller must finish carrying out one list before it
starts on the next, in the order they were returned
(`ingest.protocol.HttpChannel._carry_out` queues them).

An event on a slot that is already answered, or after `lost` or the
closing answer, changes nothing and returns no actions.

Cost: each event is O(open slots), at most the connection's pipeline limit.
"""

from __future__ import annotations

from typing import Generic, TypeVar

RECEIVING, HELD, RUNNING, READY, WRITTEN = range(5)


class Slot:
    """One request's place in the answer order.

    `safe`: a GET or HEAD (rule 2).  `close`: the connection closes after its
    answer (``Connection: close``, an HTTP/1.0 request without keep-alive,
    an error that closes, or `Pipeline.end`).  `expect_continue`: the client
    waits for ``100 Continue`` before it sends the body.  `state` is owned by
    the `Pipeline` (`Pipeline.open` sets it).  The channel subclasses it to
    carry the request's own data.
    """

    __slots__ = ("close", "expect_continue", "safe", "state")

    def __init__(self, safe: bool, close: bool, expect_continue: bool) -> None:
        self.safe = safe
        self.close = close
        self.expect_continue = expect_continue
        self.state = RECEIVING


S = TypeVar("S", bound=Slot)


class _Action(tuple):  # type: ignore[type-arg]
    """An action: a tuple, built in C (``Write((slot, last))``: a third of a NamedTuple's cost, and
    two are built per request), equal only to an action of its own kind."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"{type(self).__name__}{tuple.__repr__(self)}"


class Write(_Action, tuple[S, bool]):
    """``(slot, last)``: write this slot's answer now; `last`: the connection closes after it
    (the answer says ``Connection: close``)."""

    __slots__ = ()


class Dispatch(_Action, tuple[S]):
    """``(slot,)``: run this request now: hand it to its endpoint."""

    __slots__ = ()


class SendContinue(_Action, tuple[S]):
    """``(slot,)``: write ``100 Continue`` now: its client waits for it to send the body."""

    __slots__ = ()


class Close(_Action, tuple[()]):
    """``()``: close the connection once what was written has gone out."""

    __slots__ = ()


Action = Write[S] | Dispatch[S] | SendContinue[S] | Close
NOTHING: tuple[()] = ()


class Pipeline(Generic[S]):
    """The slots of one connection, oldest first, and what may happen next.

    `limit` is how many slots may be open at once; `full` says when it is
    reached (the channel stops reading until an answer is written).  `slots`
    are the answers owed.  `max_requests` and `max_age` (seconds) recycle
    the connection (rule 6); 0 is no limit.
    """

    __slots__ = ("accepting", "closed", "limit", "max_age", "max_requests", "opened", "slots")

    def __init__(self, limit: int, max_requests: int = 0, max_age: float = 0.0) -> None:
        self.limit = limit
        self.max_requests = max_requests
        self.max_age = max_age
        self.opened = 0
        """Requests opened on the connection so far."""
        self.slots: list[S] = []
        """The open requests (receiving, held, running, or answered and not yet written), oldest
        first: the answers owed.  Read it; only the pipeline changes it."""
        self.accepting = True
        """Whether a new request may be opened: not after `end`, a closing slot, or the close."""
        self.closed = False
        """Nothing more will be written: the closing answer went out, or the connection is lost."""

    @property
    def full(self) -> bool:
        """`limit` requests are open (the channel reads it as ``len(slots) >= limit``, without a call)."""
        return len(self.slots) >= self.limit

    @property
    def held(self) -> int:
        """Requests received in full and waiting for their turn to run."""
        return sum(1 for slot in self.slots if slot.state == HELD)

    def open(self, slot: S, age: float = 0.0) -> tuple[()] | list[Action[S]]:
        """A request's head is complete: `slot` takes the next place.

        `age` is the connection's, in seconds, when the request arrived: past
        `max_age`, or as the `max_requests`-th, the slot is the last (rule 6).
        Raises ValueError once not `accepting`.
        """
        if not self.accepting:
            raise ValueError("a request was opened after the connection's last one")
        self.opened += 1
        if (self.max_requests and self.opened >= self.max_requests) or (self.max_age and age >= self.max_age):
            slot.close = True
        slot.state = RECEIVING
        slots = self.slots
        slots.append(slot)
        if slot.close:
            self.accepting = False
        if slot.expect_continue and len(slots) == 1:
            slot.expect_continue = False
            return [SendContinue((slot,))]
        return NOTHING

    def complete(self, slot: S) -> tuple[()] | list[Action[S]]:
        """`slot`'s body is received in full: it runs now, or once its turn comes (rule 2)."""
        if slot.state != RECEIVING:
            return NOTHING
        slot.expect_continue = False  # the body is here: no 100 Continue is due any more
        if self.slots[0] is slot:  # nothing before it: it runs now (the common case, without `_run`)
            slot.state = RUNNING
            return [Dispatch((slot,))]
        slot.state = HELD
        return self._run([])

    def answer(self, slot: S, close: bool = False) -> tuple[()] | list[Action[S]]:
        """`slot`'s answer is ready: write what may go, run what may run.

        `close`: the connection ends after this answer.
        """
        if slot.state >= READY or self.closed:
            return NOTHING
        slot.state = READY  # a READY slot is written before it could be owed a 100 Continue
        if close:
            slot.close = True
            self.accepting = False
        slots = self.slots
        if slots[0] is not slot:  # it waits for the answers before it; but a safe request after it may run
            return self._run([])
        actions: list[Action[S]] = []
        while slots and slots[0].state == READY:
            head = slots.pop(0)
            head.state = WRITTEN
            if head.close:
                actions.append(Write((head, True)))
                actions.append(Close())
                self._release()
                return actions
            actions.append(Write((head, False)))
        if not slots:
            return actions
        head = slots[0]
        if head.expect_continue:
            head.expect_continue = False
            actions.append(SendContinue((head,)))
        return self._run(actions)

    def end(self) -> tuple[()] | list[Action[S]]:
        """No more requests will come: close after the last open slot's answer, or now when none is open."""
        if self.closed:
            return NOTHING
        self.accepting = False
        if self.slots:
            self.slots[-1].close = True
            return NOTHING
        self.closed = True
        return [Close()]

    def retire(self) -> None:
        """The connection closes after one more answer (rule 7): the last open slot's, else the next one's.

        Unlike `end`, requests still come: one more is read when none is
        open.  Returns nothing: no answer is ready or due because of it.
        """
        if not self.accepting:
            return
        if self.slots:
            self.slots[-1].close = True
            self.accepting = False
        else:
            self.max_requests = self.opened + 1

    def lost(self) -> None:
        """The connection is gone: release every slot at once; later events change nothing."""
        self.accepting = False
        self._release()

    def _release(self) -> None:
        for slot in self.slots:
            slot.state = WRITTEN
        self.slots.clear()
        self.closed = True

    def _run(self, actions: list[Action[S]]) -> tuple[()] | list[Action[S]]:
        """Append a `Dispatch` for each held slot whose turn has come (rule 2)."""
        answered = True  # every slot before the one looked at is answered
        for slot in self.slots:
            state = slot.state
            if state == HELD:
                if slot.safe and not answered:
                    break
                slot.state = RUNNING
                actions.append(Dispatch((slot,)))
                answered = False
            elif state == RUNNING:
                answered = False
            elif state == RECEIVING:
                break
        return actions or NOTHING
