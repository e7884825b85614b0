"""Settings: the command line beats the config file, which beats built-in defaults.

The config file is INI with an ``[ingest]`` section whose keys are the long
option names (``data-dir = /var/lib/ingest``).  twistd knows no such file,
so the plugin reads it: ``--config FILE`` names one (it must exist), else
``tap.cfg`` in the working directory is read when it is there.  An unknown
key or a bad value is an error, not a silent default.

`Settings` is frozen: the wiring reads it once and passes values on.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

DEFAULT_CONFIG = "tap.cfg"
BACKLOG = 1024


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Settings:
    port: str = "8080"
    data_dir: str = "./data"
    threads: int = 16
    flush_interval: float = 0.1
    max_buffer: int = 1_000_000
    max_body: int = 33_554_432
    idle_timeout: float = 60.0
    segment_bytes: int = 67_108_864
    ack: str = "buffered"
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    auth_tokens: str = ""
    max_connections: int = 0
    header_timeout: float = 10.0

    @property
    def durable(self) -> bool:
        return self.ack == "durable"

    @property
    def burst(self) -> float:
        """The bucket size: `rate_burst`, or one second's worth of `rate_limit` when it is 0."""
        return self.rate_burst or self.rate_limit

    @property
    def endpoint(self) -> str:
        """The Twisted server endpoint description for `port`."""
        return endpoint_description(self.port)


OPTIONS: list[tuple[str, str]] = [
    ("port", "TCP port, or a Twisted server endpoint description (tcp:8080:interface=127.0.0.1)"),
    ("data-dir", "directory of the segment files"),
    ("threads", "size of the parsing thread pool; 0 parses on the reactor thread"),
    ("flush-interval", "seconds between flushes to disk"),
    ("max-buffer", "samples held in memory before requests are refused with 503"),
    ("max-body", "bytes of one request body"),
    ("idle-timeout", "seconds before an idle connection is closed"),
    ("segment-bytes", "rotate the active segment past this many bytes"),
    ("ack", "buffered (2xx once in memory) or durable (2xx once written and fsynced)"),
    ("rate-limit", "samples per second per client; 0 is no limit"),
    ("rate-burst", "samples a client may send at once (the bucket size); 0 is one second's worth"),
    ("auth-tokens", "file of tokens, one per line, optionally 'token name'; requests then need one"),
    ("max-connections", "open connections at most; past it new ones wait in the backlog; 0 is no limit"),
    ("header-timeout", "seconds a client has to send a request's head, from its first byte"),
]


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.replace("_", ""))
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


def _ack(text: str) -> str:
    if text not in ("buffered", "durable"):
        raise ValueError("must be buffered or durable")
    return text


def _port(text: str) -> str:
    endpoint_description(text)
    return text


_PARSERS: dict[str, Callable[[str], object]] = {
    "port": _port,
    "data_dir": str,
    "threads": _count(0),
    "flush_interval": _seconds,
    "max_buffer": _count(1),
    "max_body": _count(0),
    "idle_timeout": _seconds,
    "segment_bytes": _count(1),
    "ack": _ack,
    "rate_limit": _rate,
    "rate_burst": _rate,
    "auth_tokens": str,
    "max_connections": _count(0),
    "header_timeout": _seconds,
}


def endpoint_description(port: str) -> str:
    """A bare port number becomes ``tcp:PORT:backlog=1024``; a description passes as it is."""
    port = port.strip()
    if port.isdigit():
        if not 0 <= int(port) <= 65535:
            raise ValueError("a port number is 0 to 65535")
        return f"tcp:{int(port)}:backlog={BACKLOG}"
    if ":" not in port:
        raise ValueError("expected a port number or an endpoint description such as tcp:8080")
    return port


def read_config_file(path: str) -> dict[str, str]:
    """The ``[ingest]`` section of an INI file, keys as option names."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as config:
            parser.read_file(config)
    except (OSError, configparser.Error) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    unknown = [section for section in parser.sections() if section != "ingest"]
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] in config file {path}: expected [ingest]")
    if not parser.has_section("ingest"):
        return {}
    return dict(parser.items("ingest"))


def load(command_line: Mapping[str, str | None], config_path: str | None, cwd: str = ".") -> Settings:
    """Resolve the settings.

    `command_line` maps option names (``data-dir``) to the values given, or
    None for those not given.  `config_path` is ``--config``'s value.
    """
    file_values: dict[str, str] = {}
    if config_path is not None:
        file_values = read_config_file(config_path)
    elif os.path.exists(os.path.join(cwd, DEFAULT_CONFIG)):
        file_values = read_config_file(os.path.join(cwd, DEFAULT_CONFIG))
    known = {name for name, _ in OPTIONS}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(f"unknown key in config file: {unknown[0]}")
    merged = {**file_values, **{k: v for k, v in command_line.items() if v is not None}}
    values: dict[str, object] = {}
    for field in fields(Settings):
        option = field.name.replace("_", "-")
        if option in merged:
            try:
                values[field.name] = _PARSERS[field.name](str(merged[option]))
            except ValueError as error:
                raise ConfigError(f"--{option}: {error}") from None
    return Settings(**values)  # type: ignore[arg-type]
