"""Reloading on SIGHUP: the plan (pure), the reload of real files, what it changes in the front, and the
supervisor passing the signal on.  The signal itself, through twistd: `tests.test_reload_e2e`."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import fields
from typing import Any

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ingest import config
from ingest.auth import Tokens
from ingest.config import Settings
from ingest.reload import RELOADABLE, Loaded, Reloader, describe, plan
from ingest.timeouts import Timeouts
from ingest.workers import READY_KEY, Supervisor
from tests.helpers import SAMPLE, Stack, get, post
from tests.tempdir import temp_path
from tests.test_workers import LOCALHOST, ProcessReactor

ONE = Tokens.from_text("old-token a\n")
OTHER = Tokens.from_text("new-token b\n")


class FakeLive:
    """Records what a reload applies, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_tokens(self, tokens: Tokens | None) -> None:
        self.calls.append(("tokens", tokens))

    def set_rate_limit(self, rate: float, burst: float) -> None:
        self.calls.append(("rate", rate, burst))

    def set_timeouts(self, idle: float, head: float) -> None:
        self.calls.append(("timeouts", idle, head))

    def set_rejection_log_rate(self, rate: float) -> None:
        self.calls.append(("log rate", rate))

    def set_retention(self, retention: float, retention_bytes: int) -> None:
        self.calls.append(("retention", retention, retention_bytes))


def apply(done: Any, live: FakeLive) -> list[tuple[Any, ...]]:
    for function in done.applies:
        function(live, done.running)
    return live.calls


class PlanTests(SynchronousTestCase):
    def test_nothing_changed(self) -> None:
        """The same settings and tokens: nothing to apply, nothing ignored, one 'nothing changed'."""
        old = Loaded(Settings(auth_tokens="t"), ONE)
        done = plan(old, Loaded(Settings(auth_tokens="t"), Tokens.from_text("old-token a\n")))
        self.assertEqual((done.changed, done.ignored, done.applies), ((), (), ()))
        self.assertEqual(describe(done), "nothing changed")

    def test_reloadable_settings_are_applied_once_each(self) -> None:
        """rate-limit and rate-burst share one apply function: it runs once, with both new values."""
        old = Loaded(Settings(), None)
        new = Loaded(Settings(rate_limit=100, rate_burst=10, idle_timeout=5, rejection_log_rate=0), None)
        done = plan(old, new)
        self.assertEqual(done.changed, ("idle-timeout", "rate-limit", "rate-burst", "rejection-log-rate"))
        self.assertEqual(apply(done, FakeLive()), [("rate", 100, 10), ("timeouts", 5, 10.0), ("log rate", 0)])
        self.assertEqual(
            describe(done),
            "changed idle-timeout 60.0 -> 5, rate-limit 0.0 -> 100, rate-burst 0.0 -> 10, "
            "rejection-log-rate 5.0 -> 0",
        )

    def test_retention_limits_are_applied_together(self) -> None:
        """--retention and --retention-bytes share one apply function: it runs once, with both values."""
        done = plan(Loaded(Settings(), None), Loaded(Settings(retention=86400, retention_bytes=1000), None))
        self.assertEqual((done.changed, done.ignored), (("retention", "retention-bytes"), ()))
        self.assertEqual(apply(done, FakeLive()), [("retention", 86400, 1000)])
        off = plan(Loaded(Settings(retention=60), None), Loaded(Settings(), None))
        self.assertEqual(apply(off, FakeLive()), [("retention", 0.0, 0)])

    def test_settings_that_need_a_restart_are_kept(self) -> None:
        """A changed port or data directory is named as ignored and keeps running as it was, beside a
        reloadable change that is applied; the next reload names it again."""
        old = Loaded(Settings(port="8080", data_dir="a"), None)
        new = Loaded(Settings(port="9090", data_dir="b", header_timeout=3), None)
        done = plan(old, new)
        self.assertEqual((done.changed, done.ignored), (("header-timeout",), ("port", "data-dir")))
        self.assertEqual(done.running.settings, Settings(port="8080", data_dir="a", header_timeout=3))
        self.assertEqual(apply(done, FakeLive()), [("timeouts", 60.0, 3)])
        again = plan(done.running, new)
        self.assertEqual((again.changed, again.ignored), ((), ("port", "data-dir")))

    def test_token_file_contents_are_a_change(self) -> None:
        """The same --auth-tokens path with other tokens in the file is a change, said by counts only."""
        done = plan(Loaded(Settings(auth_tokens="t"), ONE), Loaded(Settings(auth_tokens="t"), OTHER))
        self.assertEqual(done.changed, ("auth-tokens",))
        self.assertEqual(apply(done, FakeLive()), [("tokens", OTHER)])
        self.assertEqual(describe(done), "changed auth-tokens (the file's tokens: 1 -> 1)")
        self.assertNotIn("token-", describe(done))
        off = plan(Loaded(Settings(auth_tokens="t"), ONE), Loaded(Settings(), None))
        self.assertEqual(describe(off), "changed auth-tokens t -> none")
        self.assertEqual(apply(off, FakeLive()), [("tokens", None)])

    def test_a_renamed_token_is_a_change(self) -> None:
        """The same token under another name changes the client a rate limit counts it as."""
        done = plan(
            Loaded(Settings(auth_tokens="t"), ONE),
            Loaded(Settings(auth_tokens="t"), Tokens.from_text("old-token z")),
        )
        self.assertEqual(done.changed, ("auth-tokens",))

    def test_table_names_settings(self) -> None:
        """Every key of RELOADABLE is a field of Settings."""
        self.assertLessEqual(set(RELOADABLE), {field.name for field in fields(Settings)})


class ReloaderTests(SynchronousTestCase):
    """`Reloader` reading real files in a directory of its own."""

    def setUp(self) -> None:
        self.cwd = temp_path(self)
        os.makedirs(self.cwd)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.write("tokens", "old-token a\n")
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\n")

    def write(self, name: str, text: str) -> None:
        with open(os.path.join(self.cwd, name), "w", encoding="utf-8") as file:
            file.write(text)

    def reloader(self, **command_line: str) -> tuple[Reloader, FakeLive, Counter[str]]:
        line: dict[str, str | None] = {name.replace("_", "-"): value for name, value in command_line.items()}
        settings = config.load(line, None, self.cwd)
        live, counts = FakeLive(), Counter[str]()
        return Reloader(Loaded(settings, ONE), live, line, None, self.cwd, counts), live, counts

    def logged(self) -> list[tuple[str, str]]:
        return [(event["log_level"].name, formatEvent(event)) for event in self.events]

    def test_change_is_applied_and_logged_in_one_line(self) -> None:
        """A new token file and rate limit are applied; one info line says what changed; counted ok."""
        reloader, live, counts = self.reloader()
        self.write("tokens", "new-token b\n")
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\nrate-limit = 50\n")
        reloader.reload()
        self.assertEqual(live.calls, [("tokens", OTHER), ("rate", 50.0, 50.0)])
        self.assertEqual(
            self.logged(),
            [("info", "reload: changed rate-limit 0.0 -> 50.0, auth-tokens (the file's tokens: 1 -> 1)")],
        )
        self.assertEqual(counts, Counter(ok=1))
        self.assertEqual(reloader.running.settings.rate_limit, 50.0)

    def test_command_line_still_wins(self) -> None:
        """An option given on the command line keeps its value whatever the file says, as at start."""
        reloader, live, _ = self.reloader(rate_limit="10", port="9999")
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\nrate-limit = 50\nport = 1234\n")
        reloader.reload()
        self.assertEqual((live.calls, self.logged()), ([], [("info", "reload: nothing changed")]))

    def test_restart_needed_is_a_warning(self) -> None:
        """A changed data directory and thread count are named in a warning and not applied."""
        reloader, live, counts = self.reloader()
        self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\ndata-dir = ./other\nthreads = 2\n")
        reloader.reload()
        self.assertEqual(
            self.logged(),
            [
                ("info", "reload: nothing changed"),
                ("warn", "reload: changed in tap.cfg but needs a restart, so ignored: data-dir, threads"),
            ],
        )
        self.assertEqual((live.calls, counts), ([], Counter(ok=1)))
        self.assertEqual(reloader.running.settings.data_dir, "./data")

    def test_bad_files_keep_everything(self) -> None:
        """A bad value, an unknown key, a broken file, a token file missing or empty: nothing is applied
        (not even the good changes beside), the error says why, and each is counted as failed."""
        reloader, live, counts = self.reloader()
        before = reloader.running
        cases = [
            (
                "tap.cfg",
                "[ingest]\nauth-tokens = tokens\nrate-limit = 50\nidle-timeout = -1\n",
                "--idle-timeout",
            ),
            (
                "tap.cfg",
                "[ingest]\nrate-limit = 50\nretention-days = 3\n",
                "unknown key in config file: retention-days",
            ),
            ("tap.cfg", "rate-limit = 50\n", "cannot read config file"),
            ("tokens", "", "--auth-tokens"),
        ]
        for name, text, reason in cases:
            self.write("tap.cfg", "[ingest]\nauth-tokens = tokens\nrate-limit = 50\n")
            self.write("tokens", "new-token b\n")
            self.write(name, text)
            self.events.clear()
            self.assertIsNone(reloader.reload())
            [(level, line)] = self.logged()
            self.assertEqual(level, "error")
            self.assertTrue(line.startswith("reload failed, every setting kept as it was: "), line)
            self.assertIn(reason, line)
        os.remove(os.path.join(self.cwd, "tokens"))
        self.assertIsNone(reloader.reload())
        self.assertEqual((live.calls, reloader.running), ([], before))
        self.assertEqual(counts, Counter(failed=5))


class WorkerCommandLineTests(SynchronousTestCase):
    def test_a_worker_reloads_as_its_supervisor(self) -> None:
        """A worker's reload keeps of its command line only what its supervisor's gave, and what the
        supervisor chose (port, workers, worker id): the config file decides the rest."""
        line = {"port": "tcp:4321", "rate-limit": "5", "threads": "3", "workers": "1", config.WORKER_ID: "2"}
        self.assertEqual(config.reload_command_line(line, None), line)
        self.assertEqual(
            config.reload_command_line(line, "threads,data-dir"),
            {"port": "tcp:4321", "rate-limit": None, "threads": "3", "workers": "1", config.WORKER_ID: "2"},
        )
        self.assertEqual(config.reload_command_line(line, "")["rate-limit"], None)


class FrontTests(SynchronousTestCase):
    """What a reload changes, in the front (`ingest.tap.build_front` on a Clock)."""

    def test_tokens_change(self) -> None:
        """After set_tokens the new token is let in and the old one refused; None turns auth off."""
        stack = Stack(tokens=ONE)
        old, new = b"Authorization: Bearer old-token", b"Authorization: Bearer new-token"
        self.assertEqual([a.status for a in stack.ask(get(b"/stats", old) + get(b"/stats", new))], [200, 401])
        stack.api.set_tokens(OTHER)
        self.assertEqual([a.status for a in stack.ask(get(b"/stats", old) + get(b"/stats", new))], [401, 200])
        stack.api.set_tokens(None)
        self.assertEqual([a.status for a in stack.ask(get(b"/stats"))], [200])

    def test_rate_limit_change(self) -> None:
        """A rate limit switched on limits at once; a lower one keeps what a client saved, up to the new
        burst; 0 switches it off."""
        stack = Stack(inline=True)
        body = post(b"/metrics", SAMPLE)
        self.assertEqual([a.status for a in stack.ask(body * 3)], [202, 202, 202])
        stack.api.set_rate_limit(0.001, 2)
        self.assertEqual([a.status for a in stack.ask(body * 3)], [202, 202, 429])
        stack.api.set_rate_limit(0.001, 1)
        self.assertEqual([a.status for a in stack.ask(body)], [429], "nothing saved up: still nothing")
        stack.api.set_rate_limit(0, 0)
        self.assertEqual([a.status for a in stack.ask(body * 3)], [202, 202, 202])

    def test_shorter_idle_timeout_applies_to_open_connections(self) -> None:
        """An open idle connection is closed by the new, shorter idle timeout, counted from its last
        traffic, not at the old deadline."""
        stack = Stack(idle_timeout=60)
        _channel, transport = stack.connect()
        stack.clock.advance(10)
        stack.factory.set_timeouts(Timeouts(idle=15, head=10))
        stack.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        stack.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_longer_idle_timeout_applies_to_open_connections(self) -> None:
        """A longer idle timeout keeps an open connection past the old deadline."""
        stack = Stack(idle_timeout=5)
        _channel, transport = stack.connect()
        stack.factory.set_timeouts(Timeouts(idle=20, head=10))
        stack.clock.advance(19)
        self.assertFalse(transport.disconnecting)
        stack.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_rejection_log_rate_change(self) -> None:
        """At a rejection log rate of 0 no rejection is logged; the lines come back when it is raised."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        stack = Stack()

        def rejections() -> int:
            return sum("rejected request" in formatEvent(event) for event in events)

        stack.factory.set_rejection_log_rate(0)
        stack.ask(get(b"/nowhere") * 5)
        self.assertEqual(rejections(), 0)
        stack.factory.set_rejection_log_rate(1)
        stack.clock.advance(1)
        stack.ask(get(b"/nowhere"))
        self.assertEqual(rejections(), 1)
        self.assertIn("5 more rejections not logged", formatEvent(events[-1]))
        self.assertEqual(events[-1]["log_level"], LogLevel.info)


class SupervisorHangupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.cwd = temp_path(self)
        os.makedirs(self.cwd)
        self.config_path = os.path.join(self.cwd, "ingest.cfg")
        with open(self.config_path, "w", encoding="utf-8") as file:
            file.write("[ingest]\nworkers = 2\n")
        line: dict[str, str | None] = {name: None for name, _ in config.OPTIONS}
        line.update({"port": LOCALHOST, "data-dir": os.path.join(self.cwd, "data"), config.WORKER_ID: None})
        settings = config.load(line, self.config_path)
        self.supervisor = Supervisor(
            settings,
            self.reactor,
            self.config_path,
            environ={},
            publish=lambda event: None,
            command_line=line,
        )
        self.addCleanup(lambda: self.supervisor._socket is not None and self.supervisor._socket.close())
        self.supervisor.startService()
        self.hangup = self.supervisor.reload_on_hangup(self.cwd)

    def ready(self, worker: int) -> None:
        from twisted.logger import eventAsJSON

        event = ("\x1e" + eventAsJSON({"log_format": "serving", READY_KEY: True}) + "\n").encode()
        self.reactor.latest(worker)["protocol"].childDataReceived(1, event)

    def signals(self) -> list[list[str]]:
        return [spawn["process"].signals for spawn in self.reactor.spawned]

    def test_passed_on_to_every_worker(self) -> None:
        """SIGHUP goes on to each worker that serves; one still starting gets it once it serves."""
        self.ready(1)
        self.hangup()
        self.assertEqual(self.signals(), [["HUP"], []])
        self.ready(2)
        self.assertEqual(self.signals(), [["HUP"], ["HUP"]])

    def test_workers_started_later_get_the_new_settings(self) -> None:
        """The supervisor keeps what its reload changed (and nothing that needs a restart): a worker
        started again afterwards gets it on its command line, with the names of the supervisor's own
        options (--given-options) for its own reloads."""
        with open(self.config_path, "w", encoding="utf-8") as file:
            file.write("[ingest]\nworkers = 2\nrate-limit = 7\nthreads = 3\n")
        self.hangup()
        self.assertEqual(self.supervisor.settings.rate_limit, 7.0)
        self.assertEqual(self.supervisor.settings.threads, Settings().threads)
        self.assertEqual(self.supervisor.reloads, Counter(ok=1))
        from twisted.internet.error import ProcessTerminated

        self.reactor.end(1, ProcessTerminated(1))
        self.reactor.advance(5)
        arguments = self.reactor.latest(1)["args"]
        self.assertIn("--rate-limit=7.0", arguments)
        self.assertIn(f"--threads={Settings().threads}", arguments)
        self.assertIn("--given-options=port,data-dir", arguments)

    def test_failed_reload_still_passes_the_signal_on(self) -> None:
        """A supervisor whose reload fails keeps its settings and still signals the workers, which each
        read the files and say why themselves."""
        with open(self.config_path, "w", encoding="utf-8") as file:
            file.write("[ingest]\nworkers = many\n")
        self.ready(1)
        self.ready(2)
        before = self.supervisor.settings
        self.hangup()
        self.assertEqual(self.supervisor.settings, before)
        self.assertEqual(self.supervisor.reloads, Counter(failed=1))
        self.assertEqual(self.signals(), [["HUP"], ["HUP"]])
