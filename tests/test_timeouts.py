"""The timer decision (`ingest.timeouts.next_due`): each rule, and that every close has an end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ingest.timeouts import ABORT, BODY, CHECK, CLOSE, ENDED, HEAD, IDLE, TIMEOUT, Due, Timeouts, next_due

LIMITS = Timeouts(idle=60.0, head=10.0, write_grace=30.0, close_grace=5.0)


def due(
    now: float = 100.0,
    reading: int = IDLE,
    active: float = 100.0,
    head_began: float | None = None,
    paused: bool = False,
    owed: bool = False,
    stalled_since: float | None = None,
    closing_since: float | None = None,
) -> Due:
    return next_due(LIMITS, now, reading, active, head_began, paused, owed, stalled_since, closing_since)


class RuleTests(SynchronousTestCase):
    def test_idle_connection_closes_after_idle(self) -> None:
        """Between requests with nothing owed: close quietly at the last activity + idle."""
        self.assertEqual(due(active=90.0)[:2], (150.0, CLOSE))

    def test_answers_owed_are_not_idleness(self) -> None:
        """Between requests with answers owed: nothing is due, only a look again after idle."""
        self.assertEqual(due(now=100.0, active=10.0, owed=True)[:2], (160.0, CHECK))

    def test_slow_head_gets_408_at_the_head_timeout(self) -> None:
        """A head in progress: 408 at its first byte + head, even while bytes keep coming."""
        self.assertEqual(
            due(reading=HEAD, active=99.0, head_began=95.0),
            Due(105.0, TIMEOUT, "request head not received in time"),
        )

    def test_silent_head_gets_408_at_the_idle_timeout_when_sooner(self) -> None:
        """A head that stopped coming long ago is cut at the last byte + idle when that comes first."""
        limits = LIMITS._replace(head=600.0)
        result = next_due(limits, 100.0, HEAD, 50.0, 49.0, False, False, None, None)
        self.assertEqual(result[:2], (110.0, TIMEOUT))

    def test_silent_body_gets_408(self) -> None:
        """A body in progress: 408 at the last byte + idle, answers owed or not."""
        self.assertEqual(due(reading=BODY, active=70.0, owed=True)[:2], (130.0, TIMEOUT))

    def test_paused_reading_is_not_the_clients_delay(self) -> None:
        """While the service does not read, no read deadline applies."""
        for reading in (IDLE, HEAD, BODY):
            self.assertEqual(
                due(reading=reading, head_began=1.0, active=1.0, paused=True)[:2], (160.0, CHECK)
            )

    def test_write_stall_aborts_after_the_grace(self) -> None:
        """A peer that reads nothing: abort at the stall + write_grace, whatever else holds."""
        result = due(reading=BODY, active=100.0, paused=True, stalled_since=90.0)
        self.assertEqual(result[:2], (120.0, ABORT))

    def test_closing_aborts_after_the_close_grace(self) -> None:
        """Once a close began, the only deadline is its abort."""
        for reading in (IDLE, HEAD, BODY, ENDED):
            self.assertEqual(due(reading=reading, closing_since=98.0, stalled_since=1.0)[:2], (103.0, ABORT))

    def test_ended_with_answers_owed_waits_for_them(self) -> None:
        """No more requests, answers owed: the service's delay; only a look again."""
        self.assertEqual(due(reading=ENDED, owed=True)[:2], (160.0, CHECK))


class PropertyTests(SynchronousTestCase):
    @given(
        now=st.floats(0, 1e6),
        reading=st.sampled_from([IDLE, HEAD, BODY, ENDED]),
        ago=st.floats(0, 1e4),
        began=st.none() | st.floats(0, 1e4),
        paused=st.booleans(),
        owed=st.booleans(),
        stalled=st.none() | st.floats(0, 1e4),
        closing=st.none() | st.floats(0, 1e4),
    )
    def test_always_a_deadline_and_closing_always_aborts(
        self,
        now: float,
        reading: int,
        ago: float,
        began: float | None,
        paused: bool,
        owed: bool,
        stalled: float | None,
        closing: float | None,
    ) -> None:
        """There is always a next deadline, never more than idle ahead; a close always ends in an abort,
        at most close_grace after it began; a stall, at most write_grace after it began."""
        result = next_due(
            LIMITS,
            now,
            reading,
            now - ago,
            None if began is None else now - began,
            paused,
            owed,
            None if stalled is None else now - stalled,
            None if closing is None else now - closing,
        )
        self.assertLessEqual(result.at, now + LIMITS.idle)
        if closing is not None:
            self.assertEqual(result.action, ABORT)
            self.assertAlmostEqual(result.at, now - closing + LIMITS.close_grace)
        elif stalled is not None:
            self.assertLessEqual(result.at, now - stalled + LIMITS.write_grace + 1e-6)
        if result.action in (TIMEOUT, CLOSE):
            self.assertFalse(paused)
