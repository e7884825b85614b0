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
happen in the order the requests arrived.

With no pool (``--threads 0``) bodies are decoded inline, on the reactor
thread, at submission.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ingest.bodies import Decoded, Job, decode_jobs
from ingest.errors import IngestError

Outcome = Decoded | IngestError
RunInPool = Callable[[Callable[[list[Job]], list[Outcome]], list[Job]], "Deferred[list[Outcome]]"]


class ParseQueue:
    """Gathers jobs per reactor turn and runs them in the pool.

    `run_in_pool(f, jobs)` runs ``f(jobs)`` in a thread and returns a
    Deferred of its result (``partial(deferToThreadPool, reactor, pool)``
    in service, a memory worker in tests), or is ``None`` for inline
    decoding.
    """

    def __init__(self, clock: IReactorTime, run_in_pool: RunInPool | None, max_jobs: int) -> None:
        self._clock = clock
        self._run_in_pool = run_in_pool
        self._max_jobs = max_jobs
        self._waiting: list[tuple[Job, Deferred[Outcome]]] = []
        self._scheduled = False
        # Jobs in the pool, oldest first: their result Deferreds and, once done, their outcomes.
        self._running: deque[tuple[list[Deferred[Outcome]], list[list[Outcome]]]] = deque()
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

    def submit(self, job: Job) -> Deferred[Outcome]:
        """Decode one body; the Deferred fires with its `Decoded` or `IngestError` and never fails."""
        if self._run_in_pool is None:
            return succeed(decode_jobs([job])[0])
        result: Deferred[Outcome] = Deferred()
        self._waiting.append((job, result))
        if not self._scheduled and self.jobs_in_flight < self._max_jobs:
            self._scheduled = True
            self._clock.callLater(0, self._dispatch)
        return result

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._waiting or self.jobs_in_flight >= self._max_jobs:
            return
        waiting, self._waiting = self._waiting, []
        self.jobs_in_flight += 1
        self.bodies_in_flight += len(waiting)
        assert self._run_in_pool is not None
        slot: tuple[list[Deferred[Outcome]], list[list[Outcome]]] = ([result for _, result in waiting], [])
        self._running.append(slot)
        done = self._run_in_pool(decode_jobs, [job for job, _ in waiting])
        done.addBoth(self._finished, slot)

    def _finished(
        self,
        outcomes: list[Outcome] | Failure,
        slot: tuple[list[Deferred[Outcome]], list[list[Outcome]]],
    ) -> None:
        results, done = slot
        self.jobs_in_flight -= 1
        self.bodies_in_flight -= len(results)
        if isinstance(outcomes, Failure):
            # decode_jobs does not raise; this is a bug or a dead pool.
            error = IngestError(500, "internal error", outcomes.getErrorMessage())
            outcomes = [error] * len(results)
        done.append(outcomes)
        while self._running and self._running[0][1]:
            results, (outcomes,) = self._running.popleft()
            for result, outcome in zip(results, outcomes, strict=True):
                result.callback(outcome)
        if self._waiting and not self._scheduled:
            self._dispatch()
