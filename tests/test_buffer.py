"""Tests for `ingest.buffer`: capacity at N and N+1, take, commit, restore."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ingest.buffer import Buffer


class CapacityTests(SynchronousTestCase):
    def test_fits_exactly_at_capacity(self) -> None:
        """Samples that bring the depth to exactly `capacity` are accepted."""
        buffer = Buffer(5)
        self.assertTrue(buffer.add(b"a\nb\nc\n", 3))
        self.assertTrue(buffer.add(b"d\ne\n", 2))
        self.assertEqual(buffer.depth, 5)

    def test_one_past_capacity_is_refused_and_nothing_added(self) -> None:
        """A chunk that would bring the depth to `capacity + 1` is refused whole."""
        buffer = Buffer(5)
        self.assertTrue(buffer.add(b"a\nb\nc\n", 3))
        self.assertFalse(buffer.add(b"d\ne\nf\n", 3))
        self.assertEqual(buffer.depth, 3)
        self.assertEqual(buffer.take()[:2], (b"a\nb\nc\n", 3))

    def test_fits_says_what_add_would_do(self) -> None:
        """`fits(count)` is true up to the room left (N) and false past it (N + 1), pending and in
        flight both counted."""
        buffer = Buffer(5)
        buffer.add(b"a\nb\n", 2)
        buffer.take()
        buffer.add(b"c\n", 1)
        self.assertTrue(buffer.fits(2))
        self.assertFalse(buffer.fits(3))
        self.assertEqual(buffer.add(b"d\ne\nf\n", 3), None)

    def test_single_chunk_larger_than_capacity_is_refused(self) -> None:
        """One chunk of `capacity + 1` samples does not fit an empty buffer."""
        buffer = Buffer(5)
        self.assertFalse(buffer.add(b"x\n" * 6, 6))
        self.assertEqual(buffer.depth, 0)
        self.assertIsNone(buffer.take())

    def test_full(self) -> None:
        """`full` is true exactly when the depth has reached the capacity."""
        buffer = Buffer(3)
        self.assertFalse(buffer.full)
        buffer.add(b"a\nb\n", 2)
        self.assertFalse(buffer.full)
        buffer.add(b"c\n", 1)
        self.assertTrue(buffer.full)

    def test_in_flight_batch_keeps_its_room(self) -> None:
        """Taking a batch does not free its room: the in-flight samples still count against capacity."""
        buffer = Buffer(3)
        buffer.add(b"a\nb\nc\n", 3)
        buffer.take()
        self.assertTrue(buffer.full)
        self.assertFalse(buffer.add(b"d\n", 1))


class TakeTests(SynchronousTestCase):
    def test_take_joins_pending_chunks_in_order(self) -> None:
        """`take` returns every pending chunk joined, in the order added, with the total count."""
        buffer = Buffer(100)
        buffer.add(b"a\n", 1)
        buffer.add(b"b\nc\n", 2)
        buffer.add(b"d\n", 1)
        self.assertEqual(buffer.take()[:2], (b"a\nb\nc\nd\n", 4))

    def test_take_when_empty_is_none(self) -> None:
        """`take` on an empty buffer returns None and puts nothing in flight."""
        buffer = Buffer(10)
        self.assertIsNone(buffer.take())
        self.assertEqual(buffer.depth, 0)

    def test_take_while_a_batch_is_in_flight_is_none(self) -> None:
        """Only one batch is in flight at a time: a second `take` returns None even with data pending."""
        buffer = Buffer(10)
        buffer.add(b"a\n", 1)
        buffer.take()
        buffer.add(b"b\n", 1)
        self.assertIsNone(buffer.take())

    def test_depth_counts_pending_and_in_flight(self) -> None:
        """`depth` is pending samples plus the samples of the batch in flight."""
        buffer = Buffer(10)
        buffer.add(b"a\nb\n", 2)
        buffer.take()
        self.assertEqual(buffer.depth, 2)
        buffer.add(b"c\n", 1)
        self.assertEqual(buffer.depth, 3)


class CommitTests(SynchronousTestCase):
    def test_commit_frees_the_room(self) -> None:
        """After `commit` the written batch no longer counts and its room is free again."""
        buffer = Buffer(3)
        buffer.add(b"a\nb\nc\n", 3)
        buffer.take()
        buffer.commit()
        self.assertEqual(buffer.depth, 0)
        self.assertFalse(buffer.full)
        self.assertTrue(buffer.add(b"d\ne\nf\n", 3))

    def test_commit_allows_the_next_take(self) -> None:
        """After `commit` the next `take` returns what was added meanwhile, and only that."""
        buffer = Buffer(10)
        buffer.add(b"a\n", 1)
        buffer.take()
        buffer.add(b"b\n", 1)
        buffer.commit()
        self.assertEqual(buffer.take()[:2], (b"b\n", 1))


class RestoreTests(SynchronousTestCase):
    def test_restore_puts_the_batch_in_front(self) -> None:
        """A restored batch goes back before chunks added meanwhile, so the next take keeps order."""
        buffer = Buffer(10)
        buffer.add(b"a\n", 1)
        buffer.add(b"b\n", 1)
        buffer.take()
        buffer.add(b"c\n", 1)
        buffer.add(b"d\n", 1)
        buffer.restore()
        self.assertEqual(buffer.depth, 4)
        self.assertEqual(buffer.take()[:2], (b"a\nb\nc\nd\n", 4))

    def test_restore_keeps_depth(self) -> None:
        """Restoring does not change the depth: the samples were counted all along."""
        buffer = Buffer(3)
        buffer.add(b"a\nb\n", 2)
        buffer.take()
        buffer.add(b"c\n", 1)
        self.assertEqual(buffer.depth, 3)
        buffer.restore()
        self.assertEqual(buffer.depth, 3)
        self.assertTrue(buffer.full)

    def test_restore_twice_after_repeated_failures(self) -> None:
        """Take and restore repeated keep every sample exactly once, in order."""
        buffer = Buffer(10)
        buffer.add(b"a\n", 1)
        buffer.take()
        buffer.add(b"b\n", 1)
        buffer.restore()
        buffer.take()
        buffer.add(b"c\n", 1)
        buffer.restore()
        self.assertEqual(buffer.take()[:2], (b"a\nb\nc\n", 3))

    def test_restore_with_nothing_in_flight_does_nothing(self) -> None:
        """`restore` without a batch in flight leaves the buffer as it is."""
        buffer = Buffer(10)
        buffer.add(b"a\n", 1)
        buffer.restore()
        self.assertEqual(buffer.depth, 1)
        self.assertEqual(buffer.take()[:2], (b"a\n", 1))


class SequenceAndPressureTests(SynchronousTestCase):
    def test_sequence_numbers(self) -> None:
        """add numbers chunks 1, 2, ...; a batch carries its last chunk's number, also after a restore."""
        buffer = Buffer(10)
        self.assertEqual([buffer.add(b"a\n", 1), buffer.add(b"b\n", 1)], [1, 2])
        self.assertEqual(buffer.take().last_seq, 2)
        buffer.restore()
        self.assertEqual(buffer.add(b"c\n", 1), 3)
        self.assertEqual(buffer.take().last_seq, 3)

    def test_pressure_hysteresis(self) -> None:
        """Saturated from the high mark until the depth falls to the low mark; each change reported once."""
        changes: list[bool] = []
        buffer = Buffer(10, high=0.8, low=0.5, on_pressure=changes.append)
        for _ in range(7):
            buffer.add(b"x\n", 1)
        self.assertEqual(changes, [])
        buffer.add(b"x\n", 1)  # 8 = high mark
        self.assertEqual(changes, [True])
        buffer.add(b"x\n", 1)
        self.assertEqual(changes, [True])
        buffer.take()
        buffer.add(b"y\n", 1)
        buffer.commit()  # 1 left: below the low mark
        self.assertEqual(changes, [True, False])
        self.assertFalse(buffer.saturated)

    def test_pressure_stays_until_low_mark(self) -> None:
        """Falling below the high mark but above the low mark does not end saturation."""
        changes: list[bool] = []
        buffer = Buffer(20, high=0.8, low=0.1, on_pressure=changes.append)
        buffer.add(b"x\n" * 16, 16)
        buffer.take()
        buffer.add(b"y\n" * 4, 4)
        buffer.commit()  # 4 left: below the high mark, above the low mark of 2
        self.assertEqual(changes, [True])
        self.assertTrue(buffer.saturated)
