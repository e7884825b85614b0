"""Reloading on SIGHUP: read the config file and the token file again, and change what can change.

A reload computes the settings as a fresh start with the same command line
would (`read`: `ingest.config.load`, so the command line still beats the
config file, which beats the defaults) and reads the token file again.
`plan` compares them with what runs:

- a setting of `RELOADABLE` that differs is changed in the running
  process by its apply function (tokens, the rate limit, the idle and
  head timeouts, the rejection log rate, the retention limits);
- any other setting that differs (port, data directory, threads, workers,
  the sink, the ack mode, ...) is left as it runs, and named in a warning
  as needing a restart: it keeps being named at each reload until the
  process is restarted or the file says what runs again.

Nothing is changed unless everything was read: a config file that cannot
be read or parsed, a bad value, or a token file that cannot be read or
holds no token leaves every setting as it was, and the reason is logged.
One info line says what changed, or that nothing did (`describe`).

Adding a reloadable setting is one line of `RELOADABLE` (its `Settings`
field and its apply function) and the method of `Live` that the function
calls.

`plan` and `describe` are pure.  `Reloader` is the shell: it reads the
files (small, read on the reactor thread: a reload is rare), applies the
plan, logs and counts (`ingest.stats.Stats.reloads`).  The signal reaches it
through `ingest.workers.on_hangup`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import NamedTuple, Protocol

from twisted.logger import Logger

from ingest import config
from ingest.auth import Tokens
from ingest.config import Settings

log = Logger()


class Loaded(NamedTuple):
    """The settings and the token file's tokens (None without ``--auth-tokens``), as read together."""

    settings: Settings
    tokens: Tokens | None


class Live(Protocol):
    """What a reload changes in a running process (`ingest.tap.IngestService`)."""

    def set_tokens(self, tokens: Tokens | None) -> None: ...

    def set_rate_limit(self, rate: float, burst: float) -> None: ...

    def set_timeouts(self, idle: float, head: float) -> None: ...

    def set_rejection_log_rate(self, rate: float) -> None: ...

    def set_retention(self, retention: float, retention_bytes: int) -> None: ...


Apply = Callable[[Live, Loaded], None]


def _tokens(live: Live, new: Loaded) -> None:
    live.set_tokens(new.tokens)


def _rate_limit(live: Live, new: Loaded) -> None:
    live.set_rate_limit(new.settings.rate_limit, new.settings.burst)


def _timeouts(live: Live, new: Loaded) -> None:
    live.set_timeouts(new.settings.idle_timeout, new.settings.header_timeout)


def _rejection_log_rate(live: Live, new: Loaded) -> None:
    live.set_rejection_log_rate(new.settings.rejection_log_rate)


def _retention(live: Live, new: Loaded) -> None:
    live.set_retention(new.settings.retention, new.settings.retention_bytes)


RELOADABLE: dict[str, Apply] = {
    "auth_tokens": _tokens,
    "rate_limit": _rate_limit,
    "rate_burst": _rate_limit,
    "idle_timeout": _timeouts,
    "header_timeout": _timeouts,
    "rejection_log_rate": _rejection_log_rate,
    "retention": _retention,
    "retention_bytes": _retention,
}
"""The settings a reload changes, by `Settings` field, each with the function that applies the new
value (a function shared by two fields runs once).  Every other field needs a restart."""


class Plan(NamedTuple):
    """What a reload does: `changed` and `ignored` are option names (``rate-limit``); `running` is
    what runs afterwards (the new settings, but the `ignored` ones as they were); `applies` are the
    apply functions to call with it, once each, in the order of `RELOADABLE`."""

    changed: tuple[str, ...]
    ignored: tuple[str, ...]
    running: Loaded
    applies: tuple[Apply, ...]
    old: Loaded


def plan(old: Loaded, new: Loaded) -> Plan:
    """Compare what runs (`old`) with what was read (`new`).

    ``auth-tokens`` has changed when the file named is another, or its
    tokens or their names are (`Tokens.__eq__`).  `worker_id` never
    differs (a worker's own command line gives it).
    """
    changed: list[str] = []
    ignored: list[str] = []
    kept: dict[str, object] = {}
    for field in fields(Settings):
        name = field.name
        before, after = getattr(old.settings, name), getattr(new.settings, name)
        if before == after and not (name == "auth_tokens" and old.tokens != new.tokens):
            continue
        if name in RELOADABLE:
            changed.append(name)
        else:
            ignored.append(name)
            kept[name] = before
    applies = tuple(dict.fromkeys(apply for name, apply in RELOADABLE.items() if name in changed))
    running = Loaded(replace(new.settings, **kept), new.tokens)  # type: ignore[arg-type]
    return Plan(tuple(map(_option, changed)), tuple(map(_option, ignored)), running, applies, old)


def _option(field: str) -> str:
    return field.replace("_", "-")


def describe(done: Plan) -> str:
    """What changed, for the one log line: ``changed rate-limit 0.0 -> 100.0, rate-burst ...``.

    Never a token: the token file's change is said by counts
    (``auth-tokens (the file's tokens: 2 -> 3)``).
    """
    if not done.changed:
        return "nothing changed"
    parts = []
    for option in done.changed:
        field = option.replace("-", "_")
        before, after = getattr(done.old.settings, field), getattr(done.running.settings, field)
        if field == "auth_tokens" and before == after:
            parts.append(
                f"auth-tokens (the file's tokens: {_count(done.old.tokens)} -> {_count(done.running.tokens)})"
            )
        else:
            parts.append(f"{option} {_shown(before)} -> {_shown(after)}")
    return "changed " + ", ".join(parts)


def _shown(value: object) -> str:
    return "none" if value == "" else str(value)


def _count(tokens: Tokens | None) -> str:
    return "none" if tokens is None else str(len(tokens))


def read(command_line: Mapping[str, str | None], config_path: str | None, cwd: str) -> Loaded:
    """The settings of a fresh start with `command_line` and ``--config`` `config_path`, and the tokens.

    Relative paths (the config file, ``tap.cfg``, the token file) are read
    from `cwd`, the working directory at start.  Raises
    `ingest.config.ConfigError` for a file that cannot be read or a bad
    value, `ValueError` for a token file that cannot be read or holds no
    token.
    """
    path = None if config_path is None else os.path.join(cwd, config_path)
    settings = config.load(command_line, path, cwd)
    tokens = read_tokens(os.path.join(cwd, settings.auth_tokens)) if settings.auth_tokens else None
    return Loaded(settings, tokens)


def read_tokens(path: str) -> Tokens:
    """The tokens of the file at `path`; raises `ValueError` saying why it cannot be used."""
    try:
        with open(path, encoding="utf-8") as tokens_file:
            return Tokens.from_text(tokens_file.read())
    except (OSError, ValueError) as error:
        raise ValueError(f"--auth-tokens {path}: {error}") from None


class Reloader:
    """Reloads one process: a service (`live` is the `ingest.tap.IngestService`) or a supervisor.

    `running` is what the process started with; `command_line`,
    `config_path` and `cwd` are what `read` needs to compute the same again
    (see `ingest.config.reload_command_line` for a worker's).  Each reload
    is counted in `counts` under ``ok`` or ``failed``.
    """

    def __init__(
        self,
        running: Loaded,
        live: Live,
        command_line: Mapping[str, str | None],
        config_path: str | None,
        cwd: str,
        counts: Counter[str],
    ) -> None:
        self.running = running
        self._live = live
        self._command_line = dict(command_line)
        self._config_path = config_path
        self._cwd = cwd
        self._counts = counts

    def reload(self) -> Plan | None:
        """Read the files and change what can change; the plan carried out, or None when it failed."""
        try:
            new = read(self._command_line, self._config_path, self._cwd)
        except ValueError as error:  # ConfigError is one
            self._counts["failed"] += 1
            log.error("reload failed, every setting kept as it was: {reason}", reason=str(error))
            return None
        done = plan(self.running, new)
        for apply in done.applies:
            apply(self._live, done.running)
        self.running = done.running
        self._counts["ok"] += 1
        log.info("reload: {changes}", changes=describe(done))
        if done.ignored:
            log.warn(
                "reload: changed in {source} but needs a restart, so ignored: {options}",
                source=self._config_path or config.DEFAULT_CONFIG,
                options=", ".join(done.ignored),
            )
        return done
