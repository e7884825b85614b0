"""`ingest.tap.IngestService`'s shutdown order when a step fails.

The service runs on a `MemoryReactorClock` (no socket, no real time) with a
temporary data directory and its real thread pools.  `IngestService`
builds its parts itself, so a failing step is injected by replacing that
part's method on the instance (``factory.drain``, ``flusher.stop``): no
module global is patched.  The real reactor's shutdown is covered by
``test_service`` and ``test_twistd``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from ingest.config import Settings
from ingest.tap import IngestService
from tests.tempdir import temp_path


class StopTests(SynchronousTestCase):
    def start(self) -> IngestService:
        settings = Settings(port="tcp:0:interface=127.0.0.1", data_dir=temp_path(self), threads=2)
        service = IngestService(settings, MemoryReactorClock())
        service.startService()
        for pool in self.pools(service):
            self.addCleanup(lambda pool=pool: pool.stop() if pool.started else None)
            self.assertTrue(pool.started)
        return service

    def pools(self, service: IngestService) -> list[ThreadPool]:
        assert service._parse_pool is not None
        return [service._parse_pool, service._storage_pool]

    def assert_stopped(self, service: IngestService) -> None:
        for pool in self.pools(service):
            self.assertFalse(pool.started)
            self.assertTrue(pool.joined)
        self.assertEqual(service.running, 0)

    def test_pools_stop_when_the_flush_fails(self) -> None:
        """A final flush that fails still stops both thread pools (whose threads are not daemons: one
        left running keeps twistd from exiting); the failure goes on to twistd."""
        service = self.start()
        service.flusher.stop = lambda: fail(RuntimeError("a bug in the final flush"))  # type: ignore[method-assign]
        stopped: Deferred[Any] = service.stopService()
        self.failureResultOf(stopped, RuntimeError)
        self.assert_stopped(service)

    def test_a_failed_drain_is_logged_and_storage_still_flushed(self) -> None:
        """A drain that fails is logged with its traceback, and the flusher still flushes and closes
        storage (the buffer holds acknowledged samples); then the pools stop."""
        service = self.start()
        flushed: list[bool] = []
        service.factory.drain = lambda grace, linger=0.0: fail(RuntimeError("a bug in the drain"))  # type: ignore[method-assign]

        def flusher_stop() -> Deferred[None]:
            flushed.append(True)
            return succeed(None)

        service.flusher.stop = flusher_stop  # type: ignore[method-assign]
        with capturedLogs() as events:
            self.successResultOf(service.stopService())
        self.assertEqual(flushed, [True])
        self.assert_stopped(service)
        [event] = [e for e in events if "log_failure" in e]
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ExitStatusTests(SynchronousTestCase):
    def test_a_stop_that_lost_data_exits_failing(self) -> None:
        """After shutdown, a service whose stop lost data ends the process with `EXIT_DATA_LOST` (and
        says why); one that lost nothing leaves twistd's exit (the signal re-raised) alone."""
        from ingest.tap import exit_if_data_lost
        from ingest.workers import EXIT_DATA_LOST

        service = IngestService(
            Settings(port="tcp:0:interface=127.0.0.1", data_dir=temp_path(self), threads=0),
            MemoryReactorClock(),
        )
        exits: list[int] = []
        exit_if_data_lost(service, exits.append)
        self.assertEqual(exits, [])
        service.data_lost = "3 samples unwritten: [Errno 28] No space left on device"
        with capturedLogs() as events:
            exit_if_data_lost(service, exits.append)
        self.assertEqual(exits, [EXIT_DATA_LOST])
        self.assertIn("No space left", events[-1]["problem"])


class MigrationWarningTests(SynchronousTestCase):
    def test_reuse_port_warns_unless_the_kernel_migrates_queued_connections(self) -> None:
        """With --reuse-port, a kernel whose tcp_migrate_req is not 1 (or unknown) gets a warning naming
        it: a stop would reset the connections in the accept queue.  With 1, nothing is logged."""
        from ingest.tap import read_migrate_req, warn_without_migration

        setting = os.path.join(temp_path(self), "tcp_migrate_req")
        os.makedirs(os.path.dirname(setting))
        for value, warned in [("0\n", "0"), ("1\n", None)]:
            with open(setting, "w", encoding="ascii") as file:
                file.write(value)
            with capturedLogs() as events:
                warn_without_migration(read_migrate_req(setting))
            self.assertEqual([event["value"] for event in events], [warned] if warned else [])
        self.assertIsNone(read_migrate_req(setting + ".missing"))
        with capturedLogs() as events:
            warn_without_migration(None)
        self.assertEqual([event["value"] for event in events], ["unknown"])
