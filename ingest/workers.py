"""``--workers N``: N processes serving one TCP port, started and stopped by twistd's process.

With ``--workers 1`` (the default) nothing here runs: twistd's process is
the service (`ingest.tap.IngestService`), listening through a Twisted
endpoint, writing ``segment-<ns>.ndjson``.

With N > 1, twistd's process is the `Supervisor`; it serves no request.

- Start (`Supervisor.startService`): it creates the data directory, cuts
  the torn tails of writers no worker will own (`ingest.storage.repair_tails`:
  say, the single process's, after a crash and a change to ``--workers``),
  and binds, but never listens on, a socket with ``SO_REUSEPORT`` on the
  configured address: that reserves the port against other users' processes
  while workers come and go, and turns port 0 into a real port.  Then it
  starts workers 1 to N with ``reactor.spawnProcess``: the same interpreter
  running ``twistd -n --pidfile= --logger=<json_log_observer> ingest``
  with every setting of its own, the real port, ``--workers 1`` and
  ``--worker-id K`` (`worker_arguments`).
- A worker is the ordinary service with its own parse pool, buffer,
  flusher and segment files (``segment-<ns>-wK.ndjson``: each worker
  repairs and writes only its own; ``ingest-read`` reads them all).  It
  listens on a socket of its own with ``SO_REUSEPORT`` (`reuseport_socket`,
  adopted with ``reactor.adoptStreamPort``), so the kernel spreads new
  connections over the workers; a keep-alive connection stays with the
  worker that accepted it.
- Figures: each worker shares its figures through a file the others read
  (`StatsPublisher`, `ingest.workerstats`), so ``/stats`` and ``/metrics``
  give the sum over all workers whichever answers, with each worker's own
  (``workers`` in ``/stats``, ``ingest_worker_*{worker="K"}`` in
  ``/metrics``); ``"worker": K`` and the gauge ``ingest_worker_id`` say
  which answered.  ``/health`` is the answering worker's own.
- Logs: a worker writes its log events as JSON lines on its stdout
  (`json_log_observer`); the supervisor emits each again as its own, marked
  ``[worker K]``, so every worker's lines go wherever the supervisor's go
  (stdout with ``-n``, ``--logfile``, syslog), with their level and time.
  Output that is not an event (a traceback before the worker's logging
  began, on its stderr) is logged as text, also marked.
- Ready: a worker's ``ingest serving on`` event carries `READY_KEY`; once
  every worker has sent it, the supervisor logs ``ingest listening on
  <address> with N workers``.  Before that, connections may be refused.
- A worker that exits while the service runs is logged as an error and
  started again after `RESTART_DELAY` seconds, at most `MAX_RESTARTS` times
  within `RESTART_WINDOW` seconds; past that it is left stopped (a critical
  line), and when no worker is left the supervisor stops (exit status 0).
- Stop (SIGTERM or SIGINT to twistd's process, `Supervisor.stopService`):
  SIGTERM to every worker, each of which stops as the single process does
  (stops listening, answers what is in flight, flushes and fsyncs), and
  twistd's shutdown goes on only once every worker has exited.  A worker
  still running `STOP_GRACE` seconds later is killed (SIGKILL) and that is
  logged as an error: a bounded stop beats a supervisor that never exits.
  A worker whose stop lost data (it exits with `EXIT_DATA_LOST`) or was
  killed sets `Supervisor.data_lost`: the supervisor then exits with
  `EXIT_DATA_LOST` too (`ingest.tap.exit_if_data_lost`).
- SIGHUP to twistd's process (`Supervisor.reload_on_hangup`): the
  supervisor reloads its own settings (`ingest.reload`: kept for the
  workers it starts from then on; nothing is restarted), then passes the
  signal on to every worker, which reloads by itself; a worker still
  starting gets it once it serves.  Each worker is told, with
  ``--given-options``, which options the supervisor's command line gave, so
  that its reload lets the config file decide the others, as the
  supervisor's does (`ingest.config.reload_command_line`).
- A worker ignores SIGINT (`ingest.tap.makeService`): Ctrl-C at a terminal
  reaches the whole process group, and the supervisor alone decides.  For
  the same reason a supervisor run by systemd wants ``KillMode=mixed``.
- A worker whose supervisor is gone (killed by SIGKILL, say) sees its parent
  process id change within `PARENT_CHECK_INTERVAL` (`ParentWatch`) and
  stops cleanly by itself: no orphan keeps the port.

Limits, chosen to keep this small:

- Plain TCP only: a port number or ``tcp:PORT[:interface=ADDR][:backlog=N]``.
  ``--workers`` > 1 with an ssl or unix endpoint is a usage error
  (`ingest.config`); serve those with one process.
- ``SO_REUSEPORT`` sockets must belong to one user, so the supervisor binds
  after twistd drops privileges (``--uid``), in ``startService``: a port
  below 1024 then needs the right to bind it (``CAP_NET_BIND_SERVICE``).
  Any process of the same user that sets ``SO_REUSEPORT`` could join the
  port: that is how the option works.
- Spreading connections is the kernel's: Linux hashes each new connection
  over the listening sockets.  macOS and the BSDs do not balance
  ``SO_REUSEPORT`` (one socket takes every connection): run one process there.
- twistd's own options of the supervisor (``--reactor``, ``--logfile``,
  ``--uid``) are not passed on: workers run twistd's default reactor, as
  the supervisor's user, with ``-n``, and log through the supervisor.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import IO, Any, cast

from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger, eventFromJSON, globalLogPublisher, jsonFileLogObserver
from twisted.python.failure import Failure
from twisted.python.reflect import safe_str
from zope.interface import provider

from ingest import config, reload, workerstats
from ingest.auth import Tokens
from ingest.config import Settings, TcpAddress, tcp_address, tcp_description
from ingest.storage import repair_tails

log = Logger()

RESTART_DELAY = 1.0
"""Seconds before a worker that exited is started again."""
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
"""A worker is started again at most `MAX_RESTARTS` times within this many seconds."""
STOP_GRACE = 60.0
"""Seconds a worker has to stop (drain, flush, fsync) before it is killed."""
PARENT_CHECK_INTERVAL = 1.0
READY_KEY = "ingest_worker_ready"
"""The key of the log event by which a worker says it is serving."""
MAX_OUTPUT_LINE = 1 << 20
"""Bytes of a worker's output held while waiting for a newline; past it they are logged as they are."""
TWISTD = "from twisted.scripts.twistd import run; run()"


def reuseport_socket(address: TcpAddress, listen: bool = True) -> socket.socket:
    """A non-blocking TCP socket bound to `address` with ``SO_REUSEADDR`` and ``SO_REUSEPORT``.

    Listening with the address's backlog when `listen`; only bound (which
    reserves the port, and picks one for port 0) when not.  An interface
    with a colon is IPv6; an empty one is every IPv4 address, as for
    Twisted's ``tcp`` endpoint.  Raises `OSError` (address in use,
    permission denied, a name that does not resolve).  The caller closes it.
    """
    family = socket.AF_INET6 if ":" in address.interface else socket.AF_INET
    found = socket.getaddrinfo(
        address.interface or None, address.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    family, kind, protocol, _name, where = found[0]
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(where)
        if listen:
            listener.listen(address.backlog)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def worker_arguments(
    settings: Settings, worker: int, port: int, config_path: str | None, given: Collection[str] = ()
) -> list[str]:
    """The arguments, after the interpreter, that start worker `worker`.

    twistd runs ingest in the foreground, without a pid file, logging JSON
    events to stdout, with every setting of `settings` given on the command
    line (so that they win over any config file), but listening on `port`
    (the supervisor's real port), with ``--workers 1`` and ``--worker-id``.
    `config_path`, the supervisor's ``--config``, is passed on so that the
    worker reads the same file; `given`, the options on the supervisor's
    own command line, so that the worker's reloads let the config file
    decide the others, as the supervisor's do (`config.reload_command_line`).
    """
    address = tcp_address(settings.port)
    if address is None:
        raise ValueError(f"workers need a TCP port, not {settings.port}")
    options = []
    for name, _text in config.OPTIONS:
        value: object = getattr(settings, name.replace("-", "_"))
        if name == "port":
            value = tcp_description(address._replace(port=port))
        elif name == "workers":
            value = 1
        options.append(f"--{name}={value}")
    if config_path is not None:
        options.append(f"--config={config_path}")
    options.append(f"--{config.GIVEN}={','.join(given)}")
    logger = f"--logger={json_log_observer.__module__}.{json_log_observer.__name__}"
    return ["-c", TWISTD, "-n", "--pidfile=", logger, "ingest", *options, f"--{config.WORKER_ID}={worker}"]


def json_log_observer(out: IO[Any] | None = None) -> ILogObserver:
    """twistd's ``--logger`` for workers: each event as a line of JSON on stdout, for the supervisor.

    twistd calls it before it sends standard output to the log, so
    ``sys.stdout`` is still the pipe to the supervisor.  An exception does
    not survive Twisted's JSON (it arrives as ``{'unpersistable': True}``),
    so a failure's exception is sent as its message.
    """
    write = jsonFileLogObserver(sys.stdout if out is None else out)

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        failure = event.get("log_failure")
        if isinstance(failure, Failure) and not isinstance(failure.value, str):
            sent = copy.copy(failure)
            sent.value = safe_str(failure.value)  # type: ignore[assignment]
            event = {**event, "log_failure": sent}
        write(event)

    # provider() declares that the function provides ILogObserver; mypy sees only its Any.
    return cast(ILogObserver, observe)


EXIT_DATA_LOST = 74
"""The exit status of a stop that may have lost data (sysexits.h's EX_IOERR): samples left unwritten
because the disk kept failing, a failed final fsync, or (for a supervisor) such a worker or one killed."""


def exit_status(reason: Failure) -> str:
    """How a process ended, in words: ``exit status 1``, ``killed by signal 15``."""
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        return f"killed by signal {value.signal}"
    return f"exit status {getattr(value, 'exitCode', None) or 0}"


class WorkerProcess(ProcessProtocol):
    """One worker process as the supervisor sees it: its output line by line, and its end.

    `output` is called with the worker id, each line (without its newline)
    and whether it came on stderr; `ended` with the worker id and the reason
    (`ProcessDone` or `ProcessTerminated`) once the process has exited and
    its output is read.
    """

    def __init__(
        self,
        worker: int,
        output: Callable[[int, bytes, bool], None],
        ended: Callable[[int, Failure], None],
    ) -> None:
        self.worker = worker
        self._output = output
        self._ended = ended
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._partial:
            return
        lines = (self._partial[childFD] + data).split(b"\n")
        rest = lines.pop()
        if len(rest) >= MAX_OUTPUT_LINE:
            lines.append(rest)
            rest = b""
        self._partial[childFD] = rest
        for line in lines:
            self._output(self.worker, line, childFD == 2)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._output(self.worker, rest, fd == 2)
        self._partial = {1: b"", 2: b""}
        self._ended(self.worker, reason)


class Supervisor(Service):
    """Starts, watches and stops the worker processes of ``--workers N``; see the module docstring.

    `settings` are the supervisor's (a TCP port, `workers` > 1); `reactor`
    provides ``spawnProcess``, ``callLater``, ``seconds`` and ``stop``;
    `config_path` is ``--config``, passed on to the workers.  Workers run
    `executable` with `environ` (default: this interpreter and environment)
    in the working directory.  Their log events go to `publish`.
    `command_line` is the supervisor's own (option name to value, None when
    not given): what its reloads merge with the config file again.
    """

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        config_path: str | None = None,
        executable: str = sys.executable,
        environ: Mapping[str, str] | None = None,
        publish: Callable[[Any], None] = globalLogPublisher,
        command_line: Mapping[str, str | None] | None = None,
        alive: Callable[[int], bool] = workerstats.process_alive,
    ) -> None:
        address = tcp_address(settings.port)
        if address is None:
            raise ValueError(f"workers need a TCP port, not {settings.port}")
        self.settings = settings
        self.address = address
        self.worker_ids = range(1, settings.workers + 1)
        self._reactor = reactor
        self._config_path = config_path
        self._executable = executable
        self._environ = dict(os.environ if environ is None else environ)
        self._publish = publish
        self._alive = alive
        self.stats_directory: str | None = None
        """Where the workers write their figures (`ingest.workerstats`), once started."""
        self._socket: socket.socket | None = None
        self.port = 0
        """The port the workers listen on, once started: the one asked for, or the one port 0 gave."""
        self.processes: dict[int, IProcessTransport] = {}
        """The running workers by id."""
        self._pids: dict[int, int] = {}  # Twisted forgets a process's id once it has ended
        self._waiting: dict[int, Deferred[None]] = {}
        self._restarts: dict[int, list[float]] = {worker: [] for worker in self.worker_ids}
        self._pending: dict[int, IDelayedCall] = {}
        self._ready: set[int] = set()
        self._announced = False
        self.data_lost: str | None = None
        """Why the stop may have lost data: a worker's stop did, or a worker had to be killed."""
        self._command_line = dict(command_line or {})
        given = self._command_line.items()
        self._given = [name for name, value in given if value is not None and name != config.WORKER_ID]
        self._hangup_owed: set[int] = set()
        self.reloads: Counter[str] = Counter()

    # -- SIGHUP -------------------------------------------------------------------

    def reload_on_hangup(self, cwd: str) -> Callable[[], None]:
        """What SIGHUP does to the supervisor: it reloads, then passes the signal on (`hangup`).

        Its own reload logs what changed and what needs a restart, and
        keeps the new settings for the workers it starts from then on (a
        worker that exits is started again with them); nothing is
        restarted.  `cwd` is the working directory at start.
        """
        settings = self.settings
        tokens = reload.read_tokens(os.path.join(cwd, settings.auth_tokens)) if settings.auth_tokens else None
        reloader = reload.Reloader(
            reload.Loaded(settings, tokens), self, self._command_line, self._config_path, cwd, self.reloads
        )

        def hangup() -> None:
            reloader.reload()
            self.settings = reloader.running.settings
            self.hangup()

        return hangup

    def hangup(self) -> None:
        """Pass a SIGHUP on to every worker, each of which reloads by itself.

        A worker still starting gets it once it serves (before, the signal
        would end it: its handler may not be in place yet).
        """
        for worker, process in self.processes.items():
            if worker in self._ready:
                _signal(process, "HUP")
            else:
                self._hangup_owed.add(worker)

    # The supervisor serves nothing: what a reload changes only reaches its workers (`ingest.reload.Live`).
    def set_tokens(self, tokens: Tokens | None) -> None:
        pass

    def set_rate_limit(self, rate: float, burst: float) -> None:
        pass

    def set_timeouts(self, idle: float, head: float) -> None:
        pass

    def set_rejection_log_rate(self, rate: float) -> None:
        pass

    def set_retention(self, retention: float, retention_bytes: int) -> None:
        pass

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # Twisted's Service is not annotated
        data_dir = self.settings.data_dir
        os.makedirs(data_dir, exist_ok=True)
        self.stats_directory = workerstats.prepare_directory(data_dir, os.getpid(), self._alive)
        for path, cut in repair_tails(data_dir, skip=self.worker_ids):
            log.warn("cut a torn last line of {bytes} bytes off {path}", path=path, bytes=cut)
        self._socket = reuseport_socket(self.address, listen=False)
        self.port = self._socket.getsockname()[1]
        settings = ", ".join(f"{key}={value}" for key, value in vars(self.settings).items())
        log.info(
            "ingest starting {workers} workers on port {port}: {settings}",
            workers=len(self.worker_ids),
            port=self.port,
            settings=settings,
        )
        for worker in self.worker_ids:
            self._spawn(worker)

    def _spawn(self, worker: int) -> None:
        self._pending.pop(worker, None)
        self._hangup_owed.discard(worker)  # it reads the settings as they are now
        arguments = worker_arguments(self.settings, worker, self.port, self._config_path, self._given)
        protocol = WorkerProcess(worker, self._output, self._worker_ended)
        process = self._reactor.spawnProcess(
            protocol, self._executable, [self._executable, *arguments], env=self._environ, path=os.getcwd()
        )
        self.processes[worker] = process
        self._pids[worker] = process.pid
        log.info("ingest worker {worker} started, pid {pid}", worker=worker, pid=process.pid)

    def _output(self, worker: int, line: bytes, stderr: bool) -> None:
        """Emit a worker's log event again as the supervisor's, or log a line of other output."""
        text = line.decode("utf-8", "replace").lstrip("\x1e").rstrip()
        if not text:
            return
        event: Any = None
        if not stderr and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
        if not isinstance(event, dict) or "log_format" not in event:
            emit = log.error if stderr else log.info
            emit("{text}", text=text, log_system=f"worker {worker}")
            return
        system = event.get("log_system")
        if system is None:  # as Twisted's text formats name it
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event["log_system"] = f"worker {worker}" if system == "-" else f"worker {worker} {system}"
        self._publish(event)
        if event.get(READY_KEY):
            self._worker_ready(worker)

    def _worker_ready(self, worker: int) -> None:
        self._ready.add(worker)
        if worker in self._hangup_owed and worker in self.processes:
            self._hangup_owed.discard(worker)
            _signal(self.processes[worker], "HUP")
        if self._announced or len(self._ready) < len(self.worker_ids):
            return
        self._announced = True
        assert self._socket is not None
        host, port = self._socket.getsockname()[:2]
        kind = IPv6Address if self._socket.family == socket.AF_INET6 else IPv4Address
        log.info(
            "ingest listening on {address} with {workers} workers",
            address=kind("TCP", host, port),
            workers=len(self._ready),
        )

    def _worker_ended(self, worker: int, reason: Failure) -> None:
        self.processes.pop(worker, None)
        pid = self._pids.pop(worker, None)
        self._ready.discard(worker)
        waiting = self._waiting.pop(worker, None)
        if waiting is not None or not self.running:
            log.info("ingest worker {worker} stopped: {status}", worker=worker, status=exit_status(reason))
            value = reason.value
            if isinstance(value, ProcessTerminated) and (
                value.exitCode == EXIT_DATA_LOST or value.signal == signal.SIGKILL
            ):
                self.data_lost = self.data_lost or f"ingest worker {worker}: {exit_status(reason)}"
            if waiting is not None:
                waiting.callback(None)
            return
        if self.stats_directory is not None:  # its gauges (connections, buffer) would linger in the sum
            workerstats.remove_snapshot(self.stats_directory, worker)
        log.error(
            "ingest worker {worker} (pid {pid}) exited unexpectedly: {status}",
            worker=worker,
            pid=pid,
            status=exit_status(reason),
        )
        now = self._reactor.seconds()
        recent = [started for started in self._restarts[worker] if now - started < RESTART_WINDOW]
        if len(recent) >= MAX_RESTARTS:
            log.critical(
                "ingest worker {worker} exited {count} times within {window:g} s: not starting it again",
                worker=worker,
                count=len(recent) + 1,
                window=RESTART_WINDOW,
            )
            if not self.processes and not self._pending:
                log.critical("no ingest worker is left: stopping")
                self._reactor.stop()
            return
        self._restarts[worker] = [*recent, now]
        self._pending[worker] = self._reactor.callLater(RESTART_DELAY, self._spawn, worker)

    def stopService(self) -> Deferred[None]:
        """SIGTERM to every worker; fires once all have exited (those left after `STOP_GRACE` are killed)."""
        super().stopService()  # type: ignore[no-untyped-call]  # Twisted's Service is not annotated
        for call in self._pending.values():
            call.cancel()
        self._pending.clear()
        ends = []
        for worker, process in self.processes.items():
            ended: Deferred[None] = Deferred()
            self._waiting[worker] = ended
            ends.append(ended)
            _signal(process, "TERM")
        kill = self._reactor.callLater(STOP_GRACE, self._kill)

        def stopped(_: object) -> None:
            if kill.active():
                kill.cancel()
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            if self.stats_directory is not None:
                shutil.rmtree(self.stats_directory, ignore_errors=True)
            log.info("ingest stopped: {workers} workers", workers=len(ends))

        return gatherResults(ends).addCallback(stopped)

    def _kill(self) -> None:
        for worker, process in self.processes.items():
            log.error(
                "ingest worker {worker} (pid {pid}) did not stop within {grace:g} s: killing it",
                worker=worker,
                pid=process.pid,
                grace=STOP_GRACE,
            )
            _signal(process, "KILL")


def _signal(process: IProcessTransport, name: str) -> None:
    try:
        process.signalProcess(name)
    except ProcessExitedAlready:
        pass  # its end is on its way to processEnded


class ParentWatch:
    """Stops a worker whose supervisor is gone: its parent process id is then no longer `parent`.

    Checks every `interval` seconds on `clock`, through `getppid`
    (``os.getppid``); calls `stop` once (``reactor.stop``: the ordinary,
    clean shutdown).  Cost: one system call a second.
    """

    def __init__(
        self,
        clock: Any,
        parent: int,
        stop: Callable[[], object],
        getppid: Callable[[], int] = os.getppid,
        interval: float = PARENT_CHECK_INTERVAL,
    ) -> None:
        self.parent = parent
        self._stop = stop
        self._getppid = getppid
        self._interval = interval
        self._loop = LoopingCall(self._check)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _check(self) -> None:
        if self._getppid() != self.parent:
            log.warn("the supervisor (pid {pid}) is gone: stopping", pid=self.parent)
            self.stop()
            self._stop()


STATS_INTERVAL = 1.0
"""Seconds between two writes of a worker's figures for the others (`StatsPublisher`)."""


class StatsPublisher:
    """Shares a worker's own figures with the other workers, and gives everyone's last ones.

    Every `interval` seconds on `clock` it writes the figures `snapshot`
    gives (`ingest.api.Api.own_snapshot`) with the time through `write`
    (`ingest.workerstats.write_snapshot`, bound to the directory and the
    worker: a small file written and renamed on the reactor) and keeps them;
    `figures` returns them with the others' last ones, which `read` gives
    (`ingest.workerstats.read_snapshots`).  A scrape thus sums what every
    worker last published, its own included, and never writes: the sums
    never go back from one scrape to the next, whichever workers answer
    them (each file only moves forward), and a scrape costs no disk write.
    A write that fails (the disk full, the directory removed) is logged
    once per new error and tried again at the next tick: never raised.
    """

    def __init__(
        self,
        clock: Any,
        worker: int,
        snapshot: Callable[[], Mapping[str, Any]],
        write: Callable[[Mapping[str, Any], float], None],
        read: Callable[[], Mapping[int, Mapping[str, Any]]],
        interval: float = STATS_INTERVAL,
    ) -> None:
        self._clock = clock
        self._worker = worker
        self._snapshot = snapshot
        self._write = write
        self._read = read
        self._interval = interval
        self._error: str | None = None
        self._last: dict[str, Any] | None = None
        self._loop = LoopingCall(self.publish)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def publish(self) -> None:
        now = self._clock.seconds()
        own = self._snapshot()
        self._last = {**own, workerstats.WRITTEN_AT: now}
        try:
            self._write(own, now)
        except OSError as error:
            if str(error) != self._error:
                log.warn("cannot write this worker's figures for the others: {error}", error=str(error))
            self._error = str(error)
            return
        if self._error is not None:
            log.info("this worker's figures are written again")
            self._error = None

    def figures(self) -> dict[int, Mapping[str, Any]]:
        """Every worker's last published figures by id, this one's included (once it has published)."""
        found: dict[int, Mapping[str, Any]] = dict(self._read())
        if self._last is not None:
            found[self._worker] = self._last
        return found


def ignore_interrupts() -> None:
    """Ignore SIGINT: in a worker, run once twistd has installed its handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def on_hangup(reactor: Any, reload: Callable[[], object]) -> None:
    """On SIGHUP, call `reload` on the reactor thread (`ingest.reload.Reloader.reload`).

    Installed in every process of the service (a supervisor passes the
    signal on to its workers).  Its default action would end the process at
    once, without the final flush: a hangup from a closed terminal reloads
    instead.
    """

    def hangup(number: int, frame: Any) -> None:
        reactor.callFromThread(reload)

    signal.signal(signal.SIGHUP, hangup)
