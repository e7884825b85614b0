"""Carries request bodies to the parse thread pool, many bodies per hop.

One thread hop (``deferToThreadPool`` there, ``callFromThread`` back) costs
tens of microseconds of CPU, more than parsing a small body.  So bodies are
not sent one by one: every body submitted during one reactor turn waits for
a ``callLater(0)`` and then goes to the pool as one job (`decode_jobs`), and
the outcomes come back as one wake-up.

The work in flight is bounded: at most `max_jobs` jobs are in the pool at
once (``ThreadPool``'s own queue has no limit); bodies submitted meanwhile
gather into the next job, which grows as load grows.  Each connection's
pipelining limit bounds how many bodies can wait here.

Outcomes are delivered in submission order, whichever job the pool
finishes first, so the effects of requests (samples entering the buffer)
happen in the order the requests arrived.  They are delivered to a plain
callback per body, not a Deferred: a Deferred with its two callbacks costs
about 6 us a request, a plain call 1 (timeit; see BENCHMARKS.md).

With no pool (``--threads 0``) bodies are decoded inline, on the reactor
thread, at submission.  With a pool, a small body (at most `inline_bytes`,
not compressed) is decoded inline too when the pool is idle: nothing in it,
nothing waiting, and no other body decoded inline in this reactor turn.  At
a light load every request is such a body, and the hop would cost more than
the decoding (BENCHMARKS.md, issue 13: the paced latency); under load the
pool is busy and bodies batch as above.  Order is kept: a body goes inline
only when none before it is still to be delivered.

A bug met decoding one body comes back as that body's outcome, an
`ingest.errors.InternalError` whose traceback the receiver logs (see
`ingest.api.Api`); a job that fails as a whole (a bug outside the per-body
code, a dead pool) is logged here and each of its bodies gets a generic 500.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ingest.bodies import REMOTE_WRITE, Decoded, Job, decode_jobs
from ingest.errors import IngestError, internal_error

log = Logger()

INLINE_BYTES = 4096
"""The largest body decoded on the reactor when the pool is idle: about 40 JSON samples, some 30 us
of decoding, less than the hop costs (BENCHMARKS.md, issue 13)."""

Outcome = Decoded | IngestError
Deliver = Callable[[Outcome], None]
RunInPool = Callable[[Callable[[list[Job]], list[Outcome]], list[Job]], "Deferred[list[Outcome]]"]


class ParseQueue:
    """Gathers jobs per reactor turn and runs them in the pool.

    `run_in_pool(f, jobs)` runs ``f(jobs)`` in a thread and returns a
    Deferred of its result (``partial(deferToThreadPool, reactor, pool)``
    in service, a memory worker in tests), or is ``None`` for inline
    decoding.
    """

    def __init__(
        self, clock: IReactorTime, run_in_pool: RunInPool | None, max_jobs: int, inline_bytes: int = 0
    ) -> None:
        self._clock = clock
        self._run_in_pool = run_in_pool
        self._max_jobs = max_jobs
        self._inline_bytes = inline_bytes
        self._inlined_this_turn = False
        self._waiting: list[tuple[Job, Deliver]] = []
        self._scheduled = False
        # Jobs in the pool, oldest first: their bodies' callbacks and, once done, their outcomes.
        self._running: deque[tuple[list[Deliver], list[list[Outcome]]]] = deque()
        self.jobs_in_flight = 0
        self.bodies_in_flight = 0

    @property
    def inline(self) -> bool:
        """Whether bodies are decoded on the calling thread (no pool)."""
        return self._run_in_pool is None

    @property
    def queued(self) -> int:
        """Bodies waiting for or being decoded."""
        return len(self._waiting) + self.bodies_in_flight

    def decode_now(self, job: Job) -> Outcome | None:
        """`job`'s outcome, decoded at once on this thread when that is the cheaper way: always without
        a pool, and with one for a small body while the pool is idle (see the module docstring);
        None when it is to be `submit`-ted."""
        if self._run_in_pool is not None and (
            len(job.body) > self._inline_bytes
            or job.gzip
            or job.kind == REMOTE_WRITE  # snappy: a small body may inflate 20 times
            or self._inlined_this_turn
            or self._waiting
            or self.jobs_in_flight
        ):
            return None
        if self._run_in_pool is not None:
            self._inlined_this_turn = True
            self._clock.callLater(0, self._next_turn)
        return decode_jobs([job])[0]

    def submit(self, job: Job, deliver: Deliver) -> None:
        """Decode one body; `deliver` is called with its `Decoded` or `IngestError`, on the reactor thread.

        Inline, that is at once.  `deliver` must not raise: an exception
        would stop the deliveries after it.
        """
        if self._run_in_pool is None:
            deliver(decode_jobs([job])[0])
            return
        self._waiting.append((job, deliver))
        if not self._scheduled and self.jobs_in_flight < self._max_jobs:
            self._scheduled = True
            self._clock.callLater(0, self._dispatch)

    def _next_turn(self) -> None:
        self._inlined_this_turn = False

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._waiting or self.jobs_in_flight >= self._max_jobs:
            return
        waiting, self._waiting = self._waiting, []
        self.jobs_in_flight += 1
        self.bodies_in_flight += len(waiting)
        assert self._run_in_pool is not None
        slot: tuple[list[Deliver], list[list[Outcome]]] = ([deliver for _, deliver in waiting], [])
        self._running.append(slot)
        done = self._run_in_pool(decode_jobs, [job for job, _ in waiting])
        done.addBoth(self._finished, slot)

    def _finished(
        self,
        outcomes: list[Outcome] | Failure,
        slot: tuple[list[Deliver], list[list[Outcome]]],
    ) -> None:
        delivers, done = slot
        self.jobs_in_flight -= 1
        self.bodies_in_flight -= len(delivers)
        if isinstance(outcomes, Failure):
            # decode_jobs does not raise: this is a bug outside per-body code, or a dead pool.
            # Logged here, once; the clients get a generic 500, nothing of the exception's text.
            log.failure("the parse pool failed a job of {bodies} bodies", outcomes, bodies=len(delivers))
            outcomes = [internal_error()] * len(delivers)
        done.append(outcomes)
        while self._running and self._running[0][1]:
            delivers, (outcomes,) = self._running.popleft()
            for deliver, outcome in zip(delivers, outcomes, strict=True):
                try:
                    deliver(outcome)
                except Exception:  # a bug in one delivery must not strand the others
                    log.failure("delivering a parse outcome failed")
        if self._waiting and not self._scheduled:
            self._dispatch()
