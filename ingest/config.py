"""Settings: the command line beats the config file, which beats built-in defaults.

The config file is INI with an ``[ingest]`` section whose keys are the long
option names (``data-dir = /var/lib/ingest``).  twistd knows no such file,
so the plugin reads it: ``--config FILE`` names one (it must exist), else
``tap.cfg`` in the working directory is read when it is there.  An unknown
key or a bad value is an error, not a silent default.

`Settings` is frozen: the wiring reads it once and passes values on.

``--workers N`` (N > 1) runs N processes on one TCP port (`ingest.workers`);
it needs a port `tcp_address` can read (a number, or ``tcp:PORT`` with
``interface=`` and ``backlog=``), as each worker makes its own listening
socket: ssl and unix endpoints are refused.  ``--worker-id K`` is given by
the supervisor to the workers it starts; it is no config file key.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

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
    workers: int = 1
    max_connection_age: float = 0.0
    max_requests_per_connection: int = 0
    segment_age: float = 3600.0
    min_free: str = "auto"
    retention: float = 0.0
    retention_bytes: int = 0
    sink: str = ""
    sink_stream: str = "ingest"
    sink_replicas: int = 1
    rejection_log_rate: float = 5.0
    node: str = ""
    """This node's name in the stream; empty means the host name (`node_name`)."""
    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT`` (a TCP port only), so that a second ingest can bind the port too."""
    worker_id: int | None = None
    """Set in the workers the supervisor starts (1 to --workers); None in a single process."""

    @property
    def durable(self) -> bool:
        return self.ack == "durable"

    @property
    def node_name(self) -> str:
        return self.node or default_node()

    @property
    def replicated(self) -> bool:
        return self.ack == "replicated"

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
    (
        "ack",
        "buffered (2xx once in memory), durable (2xx once written and fsynced) "
        "or replicated (2xx once JetStream acknowledged it; needs --sink)",
    ),
    ("rate-limit", "samples per second per client; 0 is no limit"),
    ("rate-burst", "samples a client may send at once (the bucket size); 0 is one second's worth"),
    ("auth-tokens", "file of tokens, one per line, optionally 'token name'; requests then need one"),
    (
        "max-connections",
        "open connections at most; past it new ones wait in the backlog or are closed unread; 0 is no limit",
    ),
    ("header-timeout", "seconds a client has to send a request's head, from its first byte"),
    ("workers", "processes sharing the TCP port, each with its own parse pool and segment files"),
    (
        "max-connection-age",
        "a connection's first request past this age (300, 5m, 1h) is its last; 0 is no limit",
    ),
    ("max-requests-per-connection", "requests one connection answers at most, then closes; 0 is no limit"),
    ("segment-age", "close the active segment once this old (30m, 1h, 3600), even if small; 0 is no limit"),
    (
        "min-free",
        "free space the data directory's file system keeps (10GiB, 500MB, 5%); below it ingest answers "
        "503; auto is 1GiB or 5%, whichever is smaller; 0 is no limit",
    ),
    (
        "retention",
        "delete closed segments last written longer ago than this (30d, 12h, seconds); 0 is off",
    ),
    (
        "retention-bytes",
        "delete the oldest closed segments while all segments take more than this (50GiB, 500MB, bytes); "
        "0 is off",
    ),
    ("sink", "nats://HOST:PORT[,HOST:PORT...]: forward every flushed batch to NATS JetStream; empty is off"),
    ("sink-stream", "the JetStream stream (created if missing, with subjects <stream>.>)"),
    ("sink-replicas", "replicas of the stream when ingest creates it (3 in a cluster)"),
    ("node", "this node's name in the stream (the subject is <stream>.<node>); empty is the host name"),
    ("rejection-log-rate", "log lines a second about rejected requests (bursts of 4 s worth); 0 logs none"),
    (
        "reuse-port",
        "yes: listen with SO_REUSEPORT, so that a new ingest can start on the port while this one "
        "stops (a zero-downtime restart); a TCP port only",
    ),
]

TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A node or stream name: one NATS subject token (no dots, wildcards or spaces)."""


def default_node() -> str:
    """The host name's first label, as one subject token."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:64]
    return name or "ingest"


WORKER_ID = "worker-id"
"""The option the supervisor gives each worker it starts; on the command line only."""
GIVEN = "given-options"
"""The option by which the supervisor tells each worker the names of the options on its own command line
(comma-separated), which a reload keeps over the config file (`reload_command_line`); command line only."""
SUPERVISOR_CHOSEN = ("port", "workers", WORKER_ID)
"""A worker's options that its supervisor chose, whatever the config file says."""


class TcpAddress(NamedTuple):
    """Where a plain TCP endpoint listens: what a worker needs to make its own socket."""

    interface: str
    """An address or host name; empty for every IPv4 address, as Twisted's ``tcp`` endpoint."""
    port: int
    backlog: int


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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds from ``300``, ``300s``, ``5m``, ``1.5h`` or ``30d``; 0 or more."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:], 0)
    value = float(text[:-1] if unit else text) * (unit or 1)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a duration, 0 or more: seconds, or a number with s, m, h or d")
    return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
AUTO_MIN_FREE = (2**30, 5.0)
"""``--min-free auto``: 1 GiB or 5% of the file system, whichever is smaller."""


def min_free_bytes(setting: str, total_bytes: int) -> int:
    """The bytes ``--min-free`` keeps free on a file system of `total_bytes`.

    `setting` is ``auto`` (`AUTO_MIN_FREE`), a percentage (``5%``), or a
    size: bytes, or a number with kB, MB, GB, TB (powers of 1000) or KiB,
    MiB, GiB, TiB (powers of 1024); ``0`` keeps nothing free.  Raises
    `ValueError` for anything else.
    """
    text = setting.strip().lower().replace("_", "")
    if text == "auto":
        size, percent = AUTO_MIN_FREE
        return min(size, int(total_bytes * percent / 100))
    if text.endswith("%"):
        percent = float(text[:-1])
        if not 0 <= percent <= 100:
            raise ValueError("a percentage is 0 to 100")
        return int(total_bytes * percent / 100)
    try:
        return size_bytes(text)
    except ValueError:
        raise ValueError("expected auto, a percentage (5%) or a size (10GiB, 500MB, bytes)") from None


def size_bytes(text: str) -> int:
    """Bytes from ``500``, ``500MB`` or ``50GiB`` (kB, MB, GB, TB: powers of 1000; KiB...TiB: of 1024).

    0 or more; raises `ValueError` for anything else.
    """
    text = text.strip().lower().replace("_", "")
    number = text.rstrip("kmgtib")
    unit = _SIZE_UNITS.get(text[len(number) :].strip())
    if unit is None or not number:
        raise ValueError("expected a size (50GiB, 500MB, bytes)")
    value = float(number) * unit
    if not 0 <= value < float("inf"):
        raise ValueError("a size is 0 or more")
    return int(value)


def _min_free(text: str) -> str:
    min_free_bytes(text, 0)
    return text.strip()


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


def _ack(text: str) -> str:
    if text not in ("buffered", "durable", "replicated"):
        raise ValueError("must be buffered, durable or replicated")
    return text


def _token(text: str) -> str:
    if not TOKEN.fullmatch(text):
        raise ValueError("must be 1 to 64 letters, digits, '-' or '_' (one NATS subject token)")
    return text


def _sink(text: str) -> str:
    text = text.strip()
    for server in filter(None, (part.strip() for part in text.split(","))):
        if not re.fullmatch(r"(nats://)?[^\s,/]+:\d{1,5}", server):
            raise ValueError(f"expected nats://HOST:PORT[,HOST:PORT...], not {server!r}")
    return text


def _yes_no(text: str) -> bool:
    word = text.strip().lower()
    if word in ("yes", "true", "on", "1"):
        return True
    if word in ("no", "false", "off", "0", ""):
        return False
    raise ValueError("must be yes or no")


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
    "workers": _count(1),
    "max_connection_age": duration,
    "max_requests_per_connection": _count(0),
    "segment_age": duration,
    "min_free": _min_free,
    "retention": lambda text: duration(text) if text.strip() else 0.0,
    "retention_bytes": lambda text: size_bytes(text) if text.strip() else 0,
    "sink": _sink,
    "sink_stream": _token,
    "sink_replicas": _count(1),
    "node": lambda text: _token(text) if text else "",
    "rejection_log_rate": _rate,
    "reuse_port": _yes_no,
    "worker_id": _count(1),
}


def endpoint_description(port: str) -> str:
    """The Twisted endpoint description for a `port` setting, with the listen backlog of 1024.

    A bare port number becomes ``tcp:PORT:backlog=1024``.  A ``tcp``
    description without a backlog (``tcp:8080``, ``tcp:8080:127.0.0.1``,
    ``tcp:8080:interface=127.0.0.1``), and a ``tcp6`` or ``ssl`` one whose
    options after the port are all named (``tcp6:8080:interface=\\:\\:1``),
    get ``:backlog=1024`` added, where Twisted would use 50 (``tcp6`` reads
    a positional backlog first).  Any other description passes as it is.
    """
    port = port.strip()
    if port.isdigit():
        if not 0 <= int(port) <= 65535:
            raise ValueError("a port number is 0 to 65535")
        return f"tcp:{int(port)}:backlog={BACKLOG}"
    if ":" not in port:
        raise ValueError("expected a port number or an endpoint description such as tcp:8080")
    parts = _split_description(port)
    positional = sum(value is None for _, value in parts[2:])
    # The positional options before the backlog: tcp's interface (tcp6 takes its backlog first); ssl's
    # are too many to count on.
    room = _POSITIONAL_BEFORE_BACKLOG.get(parts[0][0] if parts[0][1] is None else "", -1)
    if positional <= room and all(name != "backlog" for name, _ in parts):
        return f"{port}:backlog={BACKLOG}"
    return port


_POSITIONAL_BEFORE_BACKLOG = {"tcp": 1, "tcp6": 0, "ssl": 0}


def tcp_address(port: str) -> TcpAddress | None:
    """The address of a plain TCP `port` setting; None for any other endpoint type (ssl, unix...).

    Reads a port number, or a ``tcp:`` description as Twisted's endpoint
    parser does: the port, ``interface`` and ``backlog`` given in that order
    or as ``name=value``; a backslash escapes the next character
    (``tcp:8080:interface=\\:\\:1``).  The backlog defaults to `BACKLOG`.
    Raises `ValueError` for a ``tcp:`` description it cannot read.
    """
    parts = _split_description(endpoint_description(port))
    if parts[0] != ("tcp", None):
        return None
    names = ("port", "interface", "backlog")
    values: dict[str, str] = {}
    positional = 0
    for text, value in parts[1:]:
        if value is None:
            if positional == len(names):
                raise ValueError(f"tcp endpoints take port, interface and backlog; {text!r} is one too many")
            name, value = names[positional], text
            positional += 1
        else:
            name = text
        if name not in names:
            raise ValueError(f"tcp endpoints take port, interface and backlog, not {name!r}")
        if name in values:
            raise ValueError(f"{name} given twice")
        values[name] = value
    if "port" not in values:
        raise ValueError("a tcp endpoint needs a port")
    number = _port_number(values["port"])
    backlog = _count(1)(values.get("backlog", str(BACKLOG)))
    return TcpAddress(values.get("interface", ""), number, backlog)


def tcp_description(address: TcpAddress) -> str:
    """The ``tcp:`` endpoint description that `tcp_address` reads back as `address`."""

    def escape(text: str) -> str:
        return "".join("\\" + char if char in ":=\\" else char for char in text)

    interface = f":interface={escape(address.interface)}" if address.interface else ""
    return f"tcp:{address.port}{interface}:backlog={address.backlog}"


def _split_description(description: str) -> list[tuple[str, str | None]]:
    """The ``:``-separated parts of an endpoint description, each as ``(text, None)`` or ``(name, value)``.

    As Twisted's ``_tokenize``: a backslash escapes the next character, and
    a value runs to the next ``:`` (it may hold ``=``).
    """
    parts: list[tuple[str, str | None]] = []
    name: str | None = None
    current: list[str] = []
    characters = iter(description)
    for char in characters:
        if char == "\\":
            current.append(next(characters, ""))
        elif char == ":":
            parts.append(("".join(current), None) if name is None else (name, "".join(current)))
            name, current = None, []
        elif char == "=" and name is None:
            name, current = "".join(current), []
        else:
            current.append(char)
    parts.append(("".join(current), None) if name is None else (name, "".join(current)))
    return parts


def _port_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise ValueError(f"a port number is 0 to 65535, not {text!r}")
    return int(text)


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

    `command_line` maps option names (``data-dir``, and `WORKER_ID`) to the
    values given, or None for those not given.  `config_path` is
    ``--config``'s value.
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
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_workers(settings)
    _check_sink(settings)
    _check_reuse_port(settings)
    return settings


def reload_command_line(command_line: Mapping[str, str | None], given: str | None) -> dict[str, str | None]:
    """The command line that a reload merges with the config file again, as `load` did at start.

    In a single process or a supervisor (`given` None), the command line as
    it was.  A worker's command line holds every setting of its supervisor
    (`ingest.workers.worker_arguments`), so that a worker started again
    later runs as its siblings do: a reload keeps of it only what the
    supervisor's own command line gave (`given`, the value of `GIVEN`) and
    what the supervisor chose (`SUPERVISOR_CHOSEN`), so that it computes
    what the supervisor computes from the same config file.
    """
    if given is None:
        return dict(command_line)
    kept = {name for name in given.split(",") if name} | set(SUPERVISOR_CHOSEN)
    return {name: value if name in kept else None for name, value in command_line.items()}


def _check_reuse_port(settings: Settings) -> None:
    """``--reuse-port`` makes its own socket, as a worker does: it needs a port `tcp_address` reads."""
    if not settings.reuse_port:
        return
    try:
        address = tcp_address(settings.port)
    except ValueError as error:
        raise ConfigError(f"--port: {error}") from None
    if address is None:
        raise ConfigError(
            f"--reuse-port needs a TCP port (a number, or tcp:PORT[:interface=ADDR]), not {settings.port}"
        )


def _check_sink(settings: Settings) -> None:
    if settings.replicated and not settings.sink:
        raise ConfigError("--ack replicated needs --sink: there is no JetStream to acknowledge the samples")
    if settings.sink and (settings.workers > 1 or settings.worker_id is not None):
        raise ConfigError("--sink runs with --workers 1 only (one cursor and one subject per process)")
    if settings.sink_replicas > 5:
        raise ConfigError("--sink-replicas: JetStream keeps 1 to 5 replicas")


def _check_workers(settings: Settings) -> None:
    """Refuse worker settings that cannot run: see the module docstring."""
    if settings.workers == 1 and settings.worker_id is None:
        return
    if settings.worker_id is not None and settings.workers != 1:
        raise ConfigError(f"--{WORKER_ID} is for the workers the supervisor starts, each with --workers 1")
    try:
        address = tcp_address(settings.port)
    except ValueError as error:
        raise ConfigError(f"--port: {error}") from None
    if address is None:
        raise ConfigError(
            "--workers: more than one worker needs a TCP port (a number, or tcp:PORT[:interface=ADDR]), "
            f"not {settings.port}; serve ssl and unix endpoints with --workers 1"
        )
