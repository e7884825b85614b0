"""Tests for ``--workers``: `ingest.workers` on fakes, then the whole thing through twistd.

The unit tests drive the `Supervisor` with a fake process reactor (a
`Clock` that records ``spawnProcess``), feed `WorkerProcess` its output by
hand and watch a `ParentWatch` on a `Clock`.  The end-to-end tests run
``twistd -n ingest --workers 2`` as `tests.test_twistd` runs twistd, post
over many new connections until both workers have answered, and check what
is on disk after SIGTERM, and that every scrape of /stats and /metrics
reports the sum over both workers.
"""

from __future__ import annotations

import errno
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.logger import (
    Logger,
    LogLevel,
    eventAsJSON,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ingest.config import Settings, TcpAddress, tcp_description
from ingest.exposition import Exposition
from ingest.stats import Stats
from ingest.storage import segment_name
from ingest.tap import Options
from ingest.workers import (
    MAX_OUTPUT_LINE,
    MAX_RESTARTS,
    READY_KEY,
    RESTART_DELAY,
    RESTART_WINDOW,
    STOP_GRACE,
    ParentWatch,
    Supervisor,
    WorkerProcess,
    exit_status,
    json_log_observer,
    reuseport_socket,
    worker_arguments,
)
from ingest.workerstats import read_snapshots, stats_directory, write_snapshot
from tests.helpers_twistd import TWISTD, Twistd, environment, start_twistd, temp_cwd
from tests.segments import read_segments
from tests.tempdir import temp_path

LOCALHOST = "tcp:0:interface=127.0.0.1"


class FakeProcess:
    """The process transport the fake reactor hands out: records signals, refuses them once ended."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)


class ProcessReactor(Clock):
    """A `Clock` that records ``spawnProcess`` and ``stop``."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []
        self.stopped = 0

    def spawnProcess(
        self,
        protocol: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
    ) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)  # type: ignore[arg-type]
        self.spawned.append(
            {"protocol": protocol, "executable": executable, "args": args, "env": env, "path": path}
        )
        self.spawned[-1]["process"] = process
        return process

    def stop(self) -> None:
        self.stopped += 1

    def latest(self, worker: int) -> dict[str, Any]:
        """The last spawn of `worker`."""
        return [spawn for spawn in self.spawned if spawn["protocol"].worker == worker][-1]

    def end(self, worker: int, reason: Exception) -> None:
        """Worker `worker`'s latest process exits with `reason`."""
        spawn = self.latest(worker)
        spawn["process"].exited = True
        spawn["protocol"].processEnded(Failure(reason))


def killed(signum: int = signal.SIGTERM) -> ProcessTerminated:
    return ProcessTerminated(None, signum)


def messages(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(event) for event in events]


class LoggedTestCase(SynchronousTestCase):
    def capture_logs(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events


class SupervisorTests(LoggedTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.data_dir = temp_path(self)
        self.published: list[dict[str, Any]] = []
        self.logged = self.capture_logs()

    def supervisor(self, workers: int = 2, port: str = LOCALHOST) -> Supervisor:
        settings = Settings(port=port, data_dir=self.data_dir, workers=workers, flush_interval=0.5)
        supervisor = Supervisor(
            settings,
            self.reactor,
            None,
            executable="/usr/bin/python-under-test",
            environ={"PATH": "/bin"},
            publish=self.published.append,
        )
        self.addCleanup(lambda: supervisor._socket is not None and supervisor._socket.close())
        return supervisor

    def started(self, workers: int = 2) -> Supervisor:
        supervisor = self.supervisor(workers)
        supervisor.startService()
        return supervisor

    def test_starts_each_worker_with_its_arguments(self) -> None:
        """Workers 1..N run the interpreter with `worker_arguments` and the environment, here."""
        supervisor = self.started(3)
        self.assertNotEqual(supervisor.port, 0)
        self.assertEqual([spawn["protocol"].worker for spawn in self.reactor.spawned], [1, 2, 3])
        for worker, spawn in enumerate(self.reactor.spawned, 1):
            arguments = worker_arguments(supervisor.settings, worker, supervisor.port, None)
            self.assertEqual(spawn["executable"], "/usr/bin/python-under-test")
            self.assertEqual(spawn["args"], ["/usr/bin/python-under-test", *arguments])
            self.assertEqual((spawn["env"], spawn["path"]), ({"PATH": "/bin"}, os.getcwd()))
        self.assertEqual(sorted(supervisor.processes), [1, 2, 3])
        self.assertIn("ingest worker 2 started, pid 1001", messages(self.logged))

    def test_reserves_the_port_without_accepting(self) -> None:
        """The supervisor's socket holds the port against others but takes no connection."""
        supervisor = self.started()
        other = socket.socket()
        self.addCleanup(other.close)
        error = self.assertRaises(OSError, other.bind, ("127.0.0.1", supervisor.port))
        self.assertEqual(error.errno, errno.EADDRINUSE)
        client = socket.socket()
        self.addCleanup(client.close)
        self.assertRaises(ConnectionRefusedError, client.connect, ("127.0.0.1", supervisor.port))

    def test_worker_logs_are_emitted_again_marked(self) -> None:
        """A worker's JSON events are published again, marked with the worker, whatever the chunking."""
        self.started()
        protocol = self.reactor.latest(2)["protocol"]
        event = {
            "log_format": "cut {bytes} bytes",
            "bytes": 8,
            "log_level": LogLevel.warn,
            "log_namespace": "ingest.tap",
            "log_time": 1_700_000_000.0,
        }
        line = ("\x1e" + eventAsJSON(event) + "\n").encode()
        protocol.childDataReceived(1, line[:7])
        self.assertEqual(self.published, [])
        protocol.childDataReceived(1, line[7:] + line)
        self.assertEqual(len(self.published), 2)
        published = self.published[0]
        self.assertEqual(formatEvent(published), "cut 8 bytes")
        self.assertEqual(published["log_system"], "worker 2 ingest.tap#warn")
        self.assertEqual((published["log_level"], published["log_time"]), (LogLevel.warn, 1_700_000_000.0))

    def test_worker_failures_keep_their_message(self) -> None:
        """A failure a worker logs arrives with its exception's type, message and traceback."""
        self.started()
        out = io.StringIO()
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            Logger(namespace="ingest.flusher", observer=json_log_observer(out)).failure("flush failed")
        self.reactor.latest(1)["protocol"].childDataReceived(1, out.getvalue().encode())
        [published] = self.published
        text = formatEventAsClassicLogText(published)
        self.assertIn("[worker 1 ingest.flusher#critical] flush failed", text)
        self.assertIn("Traceback (most recent call last):", text)
        self.assertIn("ZeroDivisionError: division by zero", text)

    def test_other_worker_output_is_logged_as_text(self) -> None:
        """Output that is not an event is logged as marked text (stderr as errors), indents kept."""
        self.started()
        protocol = self.reactor.latest(1)["protocol"]
        protocol.childDataReceived(1, b"plain words\n{not json\n\n")
        protocol.childDataReceived(2, b"Traceback (most recent call last):\n  oops")
        self.assertEqual(self.published, [])
        self.reactor.end(1, ProcessTerminated(1))
        texts = [(formatEvent(e), e["log_level"], e.get("log_system")) for e in self.logged if "text" in e]
        self.assertEqual(
            texts,
            [
                ("plain words", LogLevel.info, "worker 1"),
                ("{not json", LogLevel.info, "worker 1"),
                ("Traceback (most recent call last):", LogLevel.error, "worker 1"),
                ("  oops", LogLevel.error, "worker 1"),
            ],
        )

    def test_listening_is_logged_once_every_worker_serves(self) -> None:
        """``ingest listening on ... port=N`` waits for the ready event of every worker, and comes once."""
        supervisor = self.started()
        ready = ("\x1e" + eventAsJSON({"log_format": "serving", READY_KEY: True}) + "\n").encode()

        def listening() -> list[str]:
            return [text for text in messages(self.logged) if text.startswith("ingest listening on")]

        self.reactor.latest(1)["protocol"].childDataReceived(1, ready)
        self.assertEqual(listening(), [])
        self.reactor.latest(2)["protocol"].childDataReceived(1, ready)
        self.reactor.latest(1)["protocol"].childDataReceived(1, ready)
        self.assertEqual(len(listening()), 1)
        self.assertRegex(listening()[0], rf"port={supervisor.port}\) with 2 workers$")

    def test_stop_waits_for_every_worker(self) -> None:
        """stopService sends SIGTERM to each worker and fires once all have exited; then frees the port."""
        supervisor = self.started()
        stopped = supervisor.stopService()
        self.assertEqual([spawn["process"].signals for spawn in self.reactor.spawned], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.reactor.end(2, killed())
        self.assertNoResult(stopped)
        self.reactor.end(1, killed())
        self.successResultOf(stopped)
        self.assertIsNone(supervisor._socket)
        self.assertEqual(len(self.reactor.spawned), 2, "no worker is started again while stopping")
        self.assertIn("ingest worker 1 stopped: killed by signal 15", messages(self.logged))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_kills_a_worker_that_hangs(self) -> None:
        """A worker still running `STOP_GRACE` seconds after SIGTERM gets SIGKILL, and that is an error."""
        stopped = self.started().stopService()
        self.reactor.end(1, killed())
        self.reactor.advance(STOP_GRACE - 0.001)
        self.assertEqual(self.reactor.latest(2)["process"].signals, ["TERM"])
        self.reactor.advance(0.001)
        self.assertEqual(self.reactor.latest(2)["process"].signals, ["TERM", "KILL"])
        self.assertNoResult(stopped)
        self.reactor.end(2, killed(signal.SIGKILL))
        self.successResultOf(stopped)
        errors = [formatEvent(e) for e in self.logged if e["log_level"] == LogLevel.error]
        self.assertEqual(
            errors, [f"ingest worker 2 (pid 1001) did not stop within {STOP_GRACE:g} s: killing it"]
        )

    def test_stop_that_lost_data_in_a_worker_is_the_supervisors(self) -> None:
        """A clean stop of every worker leaves `data_lost` None; a worker that exits with
        `EXIT_DATA_LOST`, or one killed after the grace, sets it, so the supervisor exits with it too."""
        from ingest.workers import EXIT_DATA_LOST

        clean = self.started()
        stopped = clean.stopService()
        self.reactor.end(1, killed())
        self.reactor.end(2, killed())
        self.successResultOf(stopped)
        self.assertIsNone(clean.data_lost)

        lost = self.started()
        stopped = lost.stopService()
        self.reactor.end(lost.worker_ids[0], ProcessTerminated(EXIT_DATA_LOST))
        self.reactor.advance(STOP_GRACE)
        self.reactor.end(lost.worker_ids[1], killed(signal.SIGKILL))
        self.successResultOf(stopped)
        self.assertEqual(lost.data_lost, f"ingest worker 1: exit status {EXIT_DATA_LOST}")

    def test_stop_with_a_worker_already_exited(self) -> None:
        """A worker that exited but whose end is not yet reported is waited for, not signalled."""
        supervisor = self.started()
        self.reactor.latest(1)["process"].exited = True
        stopped = supervisor.stopService()
        self.assertEqual(self.reactor.latest(1)["process"].signals, [])
        self.reactor.end(1, ProcessDone(0))
        self.reactor.end(2, killed())
        self.successResultOf(stopped)

    def test_workers_figures_live_in_a_directory_of_the_supervisors(self) -> None:
        """Start: ``.stats/<pid>`` created empty; a worker that dies loses its file; the stop removes all."""
        supervisor = self.started()
        directory = supervisor.stats_directory
        self.assertEqual(directory, stats_directory(self.data_dir, os.getpid()))
        assert directory is not None
        self.assertEqual(os.listdir(directory), [])
        for worker in (1, 2):
            write_snapshot(directory, worker, {"worker": worker}, 1.0)
        self.reactor.end(1, ProcessTerminated(1))
        self.assertEqual(sorted(read_snapshots(directory, skip=0)), [2])
        stopped = supervisor.stopService()
        self.reactor.end(2, killed())
        self.successResultOf(stopped)
        self.assertFalse(os.path.exists(directory))

    def test_worker_that_dies_is_started_again(self) -> None:
        """An unexpected exit is an error; the worker starts again after `RESTART_DELAY`, same arguments."""
        supervisor = self.started()
        first = self.reactor.latest(1)
        self.reactor.end(1, ProcessTerminated(1))
        self.assertEqual(sorted(supervisor.processes), [2])
        self.reactor.advance(RESTART_DELAY - 0.001)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.001)
        again = self.reactor.latest(1)
        self.assertIsNot(again, first)
        self.assertEqual(again["args"], first["args"])
        self.assertEqual(sorted(supervisor.processes), [1, 2])
        errors = [formatEvent(e) for e in self.logged if e["log_level"] == LogLevel.error]
        self.assertEqual(errors, ["ingest worker 1 (pid 1000) exited unexpectedly: exit status 1"])

    def test_restarts_are_bounded(self) -> None:
        """Past `MAX_RESTARTS` within `RESTART_WINDOW` a worker stays down; with none left, all stops."""
        supervisor = self.started()
        for _ in range(MAX_RESTARTS):
            self.reactor.end(1, killed(signal.SIGKILL))
            self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.reactor.spawned), 2 + MAX_RESTARTS)
        self.reactor.end(1, killed(signal.SIGKILL))
        self.reactor.advance(RESTART_WINDOW / 2)
        self.assertEqual(len(self.reactor.spawned), 2 + MAX_RESTARTS, "not started again")
        self.assertEqual((sorted(supervisor.processes), self.reactor.stopped), ([2], 0))
        critical = [formatEvent(e) for e in self.logged if e["log_level"] == LogLevel.critical]
        self.assertEqual(
            critical,
            [
                f"ingest worker 1 exited {MAX_RESTARTS + 1} times within {RESTART_WINDOW:g} s: "
                "not starting it again"
            ],
        )
        for _ in range(MAX_RESTARTS):
            self.reactor.end(2, ProcessDone(0))
            self.reactor.advance(RESTART_DELAY)
        self.reactor.end(2, ProcessDone(0))
        self.assertEqual(self.reactor.stopped, 1)
        self.assertIn("no ingest worker is left: stopping", messages(self.logged))

    def test_restart_count_forgets_after_the_window(self) -> None:
        """Exits spread wider than `RESTART_WINDOW` are restarted for ever."""
        self.started()
        for _ in range(3 * MAX_RESTARTS):
            self.reactor.end(1, ProcessTerminated(1))
            self.reactor.advance(RESTART_WINDOW / MAX_RESTARTS + 0.001)
        self.assertEqual(len(self.reactor.spawned), 2 + 3 * MAX_RESTARTS)

    def test_stop_cancels_a_pending_restart(self) -> None:
        """A worker waiting to start again when stop comes is not started; stop waits only for the others."""
        supervisor = self.started()
        self.reactor.end(1, ProcessTerminated(1))
        stopped = supervisor.stopService()
        self.reactor.advance(RESTART_DELAY)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.end(2, killed())
        self.successResultOf(stopped)

    def test_start_repairs_writers_no_worker_owns(self) -> None:
        """Before workers start, torn tails of other writers (the single process, worker 3) are cut."""
        os.makedirs(self.data_dir)
        torn = b'{"a":1}\n{"to'
        names = [segment_name(1_000), segment_name(2_000, 1), segment_name(3_000, 3)]
        for name in names:
            with open(os.path.join(self.data_dir, name), "wb") as segment:
                segment.write(torn)
        self.started(2)
        contents = []
        for name in names:
            with open(os.path.join(self.data_dir, name), "rb") as segment:
                contents.append(segment.read())
        self.assertEqual(contents, [b'{"a":1}\n', torn, b'{"a":1}\n'])
        self.assertEqual(sum("cut a torn last line" in text for text in messages(self.logged)), 2)

    def test_refuses_other_endpoints(self) -> None:
        """The supervisor serves TCP only (the options refuse the rest first)."""
        self.assertRaises(ValueError, self.supervisor, 2, "unix:/tmp/ingest.sock")


class WorkerArgumentsTests(SynchronousTestCase):
    def test_worker_gets_every_setting(self) -> None:
        """The worker's command line gives the supervisor's settings, but its port, 1 worker and its id."""
        config_path = temp_path(self)
        with open(config_path, "w", encoding="utf-8") as config_file:
            config_file.write("[ingest]\nthreads = 3\n")
        settings = Settings(
            port="tcp:0:interface=\\:\\:1:backlog=77",
            data_dir="some dir/data",
            threads=5,
            flush_interval=0.25,
            max_buffer=1234,
            max_body=99,
            idle_timeout=7.5,
            segment_bytes=4096,
            ack="durable",
            rate_limit=12.5,
            rate_burst=3.0,
            max_connections=9,
            header_timeout=2.5,
            workers=4,
        )
        arguments = worker_arguments(settings, 3, 4321, config_path)
        self.assertEqual(
            arguments[:4], ["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile="]
        )
        self.assertEqual(arguments[4:6], ["--logger=ingest.workers.json_log_observer", "ingest"])
        options = Options()
        options.parseOptions(arguments[6:])
        self.assertEqual(
            options.settings,
            replace(settings, port=tcp_description(TcpAddress("::1", 4321, 77)), workers=1, worker_id=3),
        )
        self.assertEqual(options["config"], config_path)


class WorkerProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lines: list[tuple[int, bytes, bool]] = []
        self.ends: list[tuple[int, Failure]] = []
        self.protocol = WorkerProcess(
            4, lambda *line: self.lines.append(line), lambda *end: self.ends.append(end)
        )

    def test_lines_whole_and_in_pieces(self) -> None:
        """Output is cut into lines however it arrives, byte by byte too; stdout and stderr apart."""
        for byte in b"one\ntwo\n":
            self.protocol.childDataReceived(1, bytes([byte]))
        self.protocol.childDataReceived(2, b"err")
        self.protocol.childDataReceived(1, b"three\nfo")
        self.protocol.childDataReceived(2, b"or\n")
        self.protocol.childDataReceived(3, b"ignored\n")
        self.assertEqual(
            self.lines, [(4, b"one", False), (4, b"two", False), (4, b"three", False), (4, b"error", True)]
        )

    def test_end_passes_the_rest_then_the_reason(self) -> None:
        """At the end, a last line without its newline is passed on, then the end."""
        self.protocol.childDataReceived(1, b"last words")
        reason = Failure(ProcessDone(0))
        self.protocol.processEnded(reason)
        self.assertEqual((self.lines, self.ends), ([(4, b"last words", False)], [(4, reason)]))

    def test_long_output_without_newline_is_passed_at_the_limit(self) -> None:
        """Output with no newline is not held for ever: at `MAX_OUTPUT_LINE` bytes it is passed on."""
        self.protocol.childDataReceived(1, b"x" * (MAX_OUTPUT_LINE - 1))
        self.assertEqual(self.lines, [])
        self.protocol.childDataReceived(1, b"x")
        self.assertEqual(self.lines, [(4, b"x" * MAX_OUTPUT_LINE, False)])

    def test_exit_status_in_words(self) -> None:
        """How a worker ended reads as an exit status or a signal."""
        self.assertEqual(exit_status(Failure(ProcessDone(0))), "exit status 0")
        self.assertEqual(exit_status(Failure(ProcessTerminated(3))), "exit status 3")
        self.assertEqual(exit_status(Failure(ProcessTerminated(None, 9))), "killed by signal 9")


class ParentWatchTests(LoggedTestCase):
    def test_stops_once_when_the_parent_is_gone(self) -> None:
        """The watch calls stop once the parent process id changes, and then checks no more."""
        clock = Clock()
        parents = [100, 100, 1, 1]
        stops: list[None] = []
        watch = ParentWatch(clock, 100, lambda: stops.append(None), lambda: parents.pop(0), interval=1.0)
        logged = self.capture_logs()
        watch.start()
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(stops, [])
        clock.advance(1.0)
        self.assertEqual(stops, [None])
        clock.advance(5.0)
        self.assertEqual((stops, parents), ([None], [1]))
        self.assertEqual(messages(logged), ["the supervisor (pid 100) is gone: stopping"])
        watch.stop()

    def test_stop_ends_the_checks(self) -> None:
        clock = Clock()
        watch = ParentWatch(clock, 100, lambda: None, lambda: 100)
        watch.start()
        watch.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        watch.stop()


class ReuseportSocketTests(SynchronousTestCase):
    def test_two_listeners_share_a_port(self) -> None:
        """Two sockets listen on one port; one only bound reserves it and takes no connection."""
        reserved = reuseport_socket(TcpAddress("127.0.0.1", 0, 8), listen=False)
        self.addCleanup(reserved.close)
        port = reserved.getsockname()[1]
        listeners = [reuseport_socket(TcpAddress("127.0.0.1", port, 8)) for _ in range(2)]
        for listener in listeners:
            self.addCleanup(listener.close)
            self.assertFalse(listener.getblocking())
            self.assertEqual(listener.getsockname(), ("127.0.0.1", port))
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        for client in clients:
            self.addCleanup(client.close)
        self.assertEqual(reserved.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 0)

    def test_ipv6_interface(self) -> None:
        """An interface with a colon is IPv6."""
        if not socket.has_ipv6:
            raise self.skipTest("no IPv6")
        try:
            listener = reuseport_socket(TcpAddress("::1", 0, 8))
        except OSError as error:
            raise self.skipTest(f"no IPv6 loopback: {error}") from None
        self.addCleanup(listener.close)
        self.assertEqual(listener.family, socket.AF_INET6)

    def test_port_in_use_raises(self) -> None:
        """A port held by a socket without SO_REUSEPORT cannot be shared."""
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        address = TcpAddress("127.0.0.1", holder.getsockname()[1], 8)
        self.assertRaises(OSError, reuseport_socket, address)


class WorkerFiguresTests(SynchronousTestCase):
    GAUGES = {"depth": 0, "high_mark": 0, "capacity": 10, "parse_queue": 0}

    def test_a_worker_says_which_it_is(self) -> None:
        """/stats of a worker has ``"worker": K``; /metrics the gauge ``ingest_worker_id``."""
        stats = Stats(0.0, worker=2)
        self.assertEqual(stats.snapshot(1.0, self.GAUGES)["worker"], 2)
        text = Exposition(lambda: stats.snapshot(1.0, self.GAUGES)).render().decode()
        self.assertIn("\ningest_worker_id 2.0\n", text)

    def test_a_single_process_has_no_worker_field(self) -> None:
        """Without workers, /stats and /metrics are as they were."""
        stats = Stats(0.0)
        self.assertNotIn("worker", stats.snapshot(1.0, self.GAUGES))
        self.assertNotIn(
            "ingest_worker_id", Exposition(lambda: stats.snapshot(1.0, self.GAUGES)).render().decode()
        )


STARTED = re.compile(r"ingest worker (\d+) started, pid (\d+)")
WORKER_SEGMENT = re.compile(r"segment-\d{19}-w(\d+)\.ndjson")
DEADLINE = 15.0


def exchange(port: int, batch: list[dict[str, Any]] | None) -> int:
    """Over one new connection: post `batch` (if any), then ask /stats which worker answered."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if batch is not None:
            connection.request("POST", "/metrics", json.dumps(batch), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert (response.status, json.loads(response.read())) == (202, {"accepted": len(batch)})
        connection.request("GET", "/stats")
        response = connection.getresponse()
        assert response.status == 200
        return int(json.loads(response.read())["worker"])
    finally:
        connection.close()


def segments(data_dir: str) -> list[str]:
    """What is in the data directory but the workers' figures (``.stats``)."""
    return sorted(name for name in os.listdir(data_dir) if name != ".stats")


def scrape(port: int, path: str) -> bytes:
    """``GET path`` over a new connection (the worker answering is the kernel's choice): the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return body
    finally:
        connection.close()


def worker_pids(log: str) -> dict[int, list[int]]:
    """The process ids each worker has had, oldest first, from the supervisor's log."""
    pids: dict[int, list[int]] = {}
    for worker, pid in STARTED.findall(log):
        pids.setdefault(int(worker), []).append(int(pid))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkersEndToEndTests(SynchronousTestCase):
    """``twistd -n ingest --workers 2`` in a subprocess, with real HTTP and real files."""

    def setUp(self) -> None:
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        self.cwd = temp_cwd(self)
        self.data_dir = os.path.join(self.cwd, "data")

    def start(self, *arguments: str) -> Twistd:
        return start_twistd(self, self.cwd, "--workers", "2", "--port", LOCALHOST, *arguments)

    def stop(self, service: Twistd) -> str:
        """SIGTERM; the supervisor exits as twistd does after a clean stop.  Returns the log."""
        self.assertEqual(service.stop(signal.SIGTERM), -signal.SIGTERM, service.log())
        return service.log()

    def test_two_workers_serve_persist_and_stop(self) -> None:
        """Both workers answer, each keeps what it acknowledged in its own files; SIGTERM loses nothing."""
        service = self.start("--flush-interval", "3600")
        by_worker: dict[int, set[str]] = {1: set(), 2: set()}
        deadline = time.monotonic() + DEADLINE
        connection = 0
        while connection < 20 or not all(by_worker.values()):
            self.assertLess(time.monotonic(), deadline, f"answered by {by_worker}\n{service.log()}")
            batch = [
                {"name": f"c{connection}.s{i}", "value": i, "tags": {"c": str(connection)}} for i in range(5)
            ]
            by_worker[exchange(service.port, batch)].update(sample["name"] for sample in batch)
            connection += 1
        pids = worker_pids(service.log())
        self.assertEqual(sorted(pids), [1, 2])
        self.assertEqual(segments(self.data_dir), [], "nothing flushed before the stop")

        log = self.stop(service)
        self.assertEqual(log.count("Server Shut Down"), 3, log)  # the supervisor and each worker
        self.assertEqual(len(re.findall(r"ingest worker \d stopped: killed by signal 15", log)), 2, log)
        self.assertNotIn("Traceback", log)
        for worker_pid in (pid for started in pids.values() for pid in started):
            self.assertFalse(alive(worker_pid), f"worker process {worker_pid} outlived the supervisor")

        self.assertEqual(os.listdir(os.path.join(self.data_dir, ".stats")), [], "the figures are removed")
        for name in segments(self.data_dir):
            self.assertIsNotNone(WORKER_SEGMENT.fullmatch(name), name)
        for worker in (1, 2):
            mark = f"-w{worker}.ndjson"
            stored = read_segments(self.data_dir, lambda name, mark=mark: name.endswith(mark))
            self.assertEqual(sorted(s["name"] for s in stored), sorted(by_worker[worker]), f"worker {worker}")

        result = subprocess.run(
            [sys.executable, "-m", "ingest.reader", "--data-dir", self.data_dir],
            env=environment(),
            capture_output=True,
            timeout=30,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        printed = [json.loads(line)["name"] for line in result.stdout.splitlines()]
        self.assertEqual(sorted(printed), sorted(by_worker[1] | by_worker[2]))

    def test_every_scrape_reports_all_workers(self) -> None:
        """/stats and /metrics on the shared port give the sum over both workers, whichever answers,
        and /metrics has each worker's part under a ``worker`` label."""
        service = self.start()
        by_worker = {1: 0, 2: 0}
        deadline = time.monotonic() + DEADLINE
        posted = 0
        while posted < 300 or not all(by_worker.values()):  # over many connections, until both served
            self.assertLess(time.monotonic(), deadline, f"accepted by {by_worker}\n{service.log()}")
            batch = [{"name": "spread", "value": i} for i in range(posted % 7 + 1)]
            by_worker[exchange(service.port, batch)] += len(batch)
            posted += len(batch)
        # Figures are published every second: once a scrape shows them all, each later one does.
        while json.loads(scrape(service.port, "/stats"))["samples"]["accepted"] != posted:
            self.assertLess(time.monotonic(), deadline, service.log())
            time.sleep(0.05)
        answered: set[int] = set()
        scrapes = 0
        while scrapes < 40 or answered != {1, 2}:
            self.assertLess(time.monotonic(), deadline, f"scrapes answered by {answered}")
            stats = json.loads(scrape(service.port, "/stats"))
            answered.add(stats["worker"])
            self.assertEqual(stats["samples"]["accepted"], posted)
            parts = {worker: figures["samples"]["accepted"] for worker, figures in stats["workers"].items()}
            self.assertEqual(parts, {"1": by_worker[1], "2": by_worker[2]})
            text = scrape(service.port, "/metrics").decode()
            answered.add(int(float(re.findall(r"\ningest_worker_id (\S+)\n", text)[0])))
            self.assertIn(f"\ningest_samples_accepted_total {float(posted)}\n", text)
            for worker, accepted in by_worker.items():
                series = f'ingest_worker_samples_accepted_total{{worker="{worker}"}} {float(accepted)}'
                self.assertIn(f"\n{series}\n", text)
            scrapes += 1
        self.stop(service)

    def test_worker_that_dies_is_replaced(self) -> None:
        """A worker killed with SIGKILL is started again and serves; the stop is still clean."""
        service = self.start()
        first = worker_pids(service.log())[1][0]
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + DEADLINE
        while len(worker_pids(service.log()).get(1, [])) < 2:
            self.assertLess(time.monotonic(), deadline, service.log())
            time.sleep(0.05)
        answered: set[int] = set()
        posted = 0
        while answered != {1, 2}:
            self.assertLess(time.monotonic(), deadline, service.log())
            try:
                answered.add(exchange(service.port, [{"name": "after", "value": posted}]))
            except ConnectionError:
                time.sleep(0.05)  # worker 1 is starting: the port is held, and refuses meanwhile
                continue
            posted += 1
        log = self.stop(service)
        self.assertIn(f"ingest worker 1 (pid {first}) exited unexpectedly: killed by signal 9", log)
        self.assertEqual(log.count("Server Shut Down"), 3, log)
        stored = [sample["value"] for sample in read_segments(self.data_dir)]
        self.assertEqual(sorted(stored), list(range(posted)))

    def test_workers_refuse_unix_endpoints(self) -> None:
        """``--workers 2`` with a unix socket is a usage error, before anything starts."""
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "ingest", "--workers", "2", "--port", "unix:ingest.sock"],
            cwd=self.cwd,
            env=environment(),
            capture_output=True,
            timeout=30,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"--workers: more than one worker needs a TCP port", result.stdout + result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "ingest.sock")))
