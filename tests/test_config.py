"""Tests for `ingest.config` (command line > config file > defaults) and the plugin's `Options`."""

from __future__ import annotations

import os

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from ingest import config
from ingest.config import (
    ConfigError,
    Settings,
    TcpAddress,
    endpoint_description,
    load,
    tcp_address,
    tcp_description,
)
from ingest.tap import Options
from tests.tempdir import temp_path

REPOSITORY_TAP_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tap.cfg")

NOTHING_GIVEN: dict[str, str | None] = {name: None for name, _ in config.OPTIONS}


def given(**values: str) -> dict[str, str | None]:
    """A command line as `Options` passes it: every option, None where not given."""
    command_line = dict(NOTHING_GIVEN)
    command_line.update({name.replace("_", "-"): value for name, value in values.items()})
    return command_line


class LoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = temp_path(self)
        os.makedirs(self.cwd)

    def write_config(self, text: str, name: str = "tap.cfg") -> str:
        path = os.path.join(self.cwd, name)
        with open(path, "w", encoding="utf-8") as config_file:
            config_file.write(text)
        return path

    def test_defaults_without_a_file(self) -> None:
        """With no config file and nothing on the command line, the built-in defaults apply."""
        self.assertEqual(load(NOTHING_GIVEN, None, cwd=self.cwd), Settings())
        self.assertEqual(load({}, None, cwd=self.cwd), Settings())

    def test_built_in_defaults_are_the_documented_ones(self) -> None:
        """The built-in defaults are those of the product specification."""
        self.assertEqual(
            Settings(),
            Settings(
                port="8080",
                data_dir="./data",
                threads=16,
                flush_interval=0.1,
                max_buffer=1_000_000,
                max_body=33_554_432,
                idle_timeout=60.0,
                segment_bytes=67_108_864,
            ),
        )

    def test_tap_cfg_in_cwd_is_read(self) -> None:
        """A tap.cfg in the working directory is read when no --config is given."""
        self.write_config("[ingest]\nport = 9100\nthreads = 4\ndata-dir = /srv/ingest\n")
        settings = load(NOTHING_GIVEN, None, cwd=self.cwd)
        self.assertEqual(settings.port, "9100")
        self.assertEqual(settings.threads, 4)
        self.assertEqual(settings.data_dir, "/srv/ingest")
        self.assertEqual(settings.flush_interval, Settings().flush_interval)

    def test_config_option_names_another_file(self) -> None:
        """--config names the file to read, and tap.cfg in the working directory is then ignored."""
        self.write_config("[ingest]\nport = 9100\n")
        other = self.write_config("[ingest]\nport = 9200\nmax-buffer = 500\n", name="other.cfg")
        settings = load(NOTHING_GIVEN, other, cwd=self.cwd)
        self.assertEqual(settings.port, "9200")
        self.assertEqual(settings.max_buffer, 500)

    def test_command_line_beats_file_beats_defaults(self) -> None:
        """Each option takes the command line's value, else the file's, else the default."""
        self.write_config("[ingest]\nport = 9100\nthreads = 4\n")
        settings = load(given(port="9300"), None, cwd=self.cwd)
        self.assertEqual(settings.port, "9300")
        self.assertEqual(settings.threads, 4)
        self.assertEqual(settings.max_body, Settings().max_body)

    def test_every_option_from_the_file(self) -> None:
        """Every documented option can be set in the file, under its long option name."""
        self.write_config(
            "[ingest]\nport = tcp:9000:interface=127.0.0.1\ndata-dir = d\nthreads = 0\n"
            "flush-interval = 2.5\nmax-buffer = 7\nmax-body = 0\nidle-timeout = 3\nsegment-bytes = 1_000\n"
        )
        self.assertEqual(
            load(NOTHING_GIVEN, None, cwd=self.cwd),
            Settings("tcp:9000:interface=127.0.0.1", "d", 0, 2.5, 7, 0, 3.0, 1000),
        )

    def test_unknown_key_in_file(self) -> None:
        """An unknown key in the file is an error naming the key, not silently ignored."""
        self.write_config("[ingest]\nport = 9100\nmax-bufer = 10\n")
        error = self.assertRaises(ConfigError, load, NOTHING_GIVEN, None, self.cwd)
        self.assertIn("max-bufer", str(error))

    def test_unknown_section_in_file(self) -> None:
        """A misspelled section is an error, not a file whose settings silently do nothing."""
        self.write_config("[ingset]\nport = 9100\n")
        error = self.assertRaises(ConfigError, load, NOTHING_GIVEN, None, self.cwd)
        self.assertIn("ingset", str(error))

    def test_underscore_key_in_file_is_unknown(self) -> None:
        """Keys are the long option names: ``data_dir`` is not ``data-dir``."""
        self.write_config("[ingest]\ndata_dir = /x\n")
        error = self.assertRaises(ConfigError, load, NOTHING_GIVEN, None, self.cwd)
        self.assertIn("data_dir", str(error))

    def test_bad_values_name_the_option(self) -> None:
        """A bad value on the command line is a ConfigError whose message names the option."""
        cases = [
            ("threads", "-1"),
            ("flush-interval", "0"),
            ("flush-interval", "nan"),
            ("max-buffer", "0"),
            ("port", "70000"),
            ("port", "abc"),
            ("segment-bytes", "0"),
            ("idle-timeout", "-5"),
            ("max-body", "ten"),
            ("workers", "0"),
            ("workers", "two"),
        ]
        for option, value in cases:
            command_line = dict(NOTHING_GIVEN)
            command_line[option] = value
            error = self.assertRaises(ConfigError, load, command_line, None, self.cwd)
            self.assertIn(f"--{option}", str(error), (option, value))

    def test_sink_settings(self) -> None:
        """--sink, --sink-stream, --sink-replicas and --node as given; the node defaults to the host name."""
        settings = load(
            given(
                sink="nats://a:4222, b:4223",
                sink_stream="metrics",
                sink_replicas="3",
                node="ingest-a_1",
                ack="replicated",
            ),
            None,
            self.cwd,
        )
        self.assertEqual(
            (
                settings.sink,
                settings.sink_stream,
                settings.sink_replicas,
                settings.node_name,
                settings.replicated,
            ),
            ("nats://a:4222, b:4223", "metrics", 3, "ingest-a_1", True),
        )
        self.assertEqual(Settings().sink, "")
        self.assertTrue(config.TOKEN.fullmatch(Settings().node_name))

    def test_bad_sink_values(self) -> None:
        """A node or stream that is not one subject token, a server without a port, replicas past 5."""
        cases = [
            ({"node": "a.b"}, "--node"),
            ({"node": "a b"}, "--node"),
            ({"node": "a*"}, "--node"),
            ({"sink_stream": "in.gest"}, "--sink-stream"),
            ({"sink": "nats://host"}, "--sink"),
            ({"sink": "http://host:80/x"}, "--sink"),
            ({"sink_replicas": "0"}, "--sink-replicas"),
            ({"sink": "nats://a:4222", "sink_replicas": "6"}, "--sink-replicas"),
            ({"ack": "replicated"}, "--ack replicated needs --sink"),
            ({"ack": "quorum"}, "--ack"),
            ({"sink": "nats://a:4222", "workers": "2"}, "--sink runs with --workers 1 only"),
        ]
        for values, named in cases:
            error = self.assertRaises(ConfigError, load, given(**values), None, self.cwd)
            self.assertIn(named, str(error), values)

    def test_bad_value_in_file_names_the_option(self) -> None:
        """A bad value in the file is an error too, naming the option."""
        self.write_config("[ingest]\nthreads = -1\n")
        error = self.assertRaises(ConfigError, load, NOTHING_GIVEN, None, self.cwd)
        self.assertIn("--threads", str(error))

    def test_limits_at_their_edges(self) -> None:
        """The smallest accepted values load: threads 0, max-buffer 1, port 0 and 65535."""
        settings = load(given(threads="0", max_buffer="1", port="65535"), None, cwd=self.cwd)
        self.assertEqual((settings.threads, settings.max_buffer, settings.port), (0, 1, "65535"))
        self.assertEqual(load(given(port="0"), None, cwd=self.cwd).port, "0")

    def test_connection_recycling_options(self) -> None:
        """--max-connection-age takes seconds or a duration with a unit (0 is off); the file's value loses
        to the command line's; --max-requests-per-connection is a count, 0 or more; both default off."""
        self.assertEqual((Settings().max_connection_age, Settings().max_requests_per_connection), (0.0, 0))
        for text, seconds in (("0", 0.0), ("300", 300.0), ("45s", 45.0), ("5m", 300.0), ("1.5h", 5400.0)):
            settings = load(given(max_connection_age=text), None, cwd=self.cwd)
            self.assertEqual(settings.max_connection_age, seconds, text)
        self.assertEqual(config.duration("30d"), 30 * 86400)
        self.write_config("[ingest]\nmax-connection-age = 1h\nmax-requests-per-connection = 10_000\n")
        settings = load(given(max_connection_age="5m"), None, cwd=self.cwd)
        self.assertEqual((settings.max_connection_age, settings.max_requests_per_connection), (300.0, 10_000))
        for bad in ("-1", "5x", "m", "inf"):
            with self.assertRaisesRegex(ConfigError, "--max-connection-age"):
                load(given(max_connection_age=bad), None, cwd=self.cwd)
        with self.assertRaisesRegex(ConfigError, "--max-requests-per-connection"):
            load(given(max_requests_per_connection="-1"), None, cwd=self.cwd)

    def test_missing_config_file(self) -> None:
        """--config naming a file that does not exist is an error naming the file."""
        missing = os.path.join(self.cwd, "missing.cfg")
        error = self.assertRaises(ConfigError, load, NOTHING_GIVEN, missing, self.cwd)
        self.assertIn(missing, str(error))

    def test_malformed_config_file(self) -> None:
        """A file that is not INI is an error, not a silent default."""
        path = self.write_config("port = 9100\n", name="bad.cfg")
        self.assertRaises(ConfigError, load, NOTHING_GIVEN, path, self.cwd)

    def test_repository_tap_cfg_is_the_defaults(self) -> None:
        """The repository's tap.cfg states exactly the built-in defaults."""
        self.assertTrue(os.path.exists(REPOSITORY_TAP_CFG), REPOSITORY_TAP_CFG)
        self.assertEqual(load(NOTHING_GIVEN, REPOSITORY_TAP_CFG, cwd=self.cwd), Settings())


class EndpointTests(SynchronousTestCase):
    def test_bare_port_gets_the_backlog(self) -> None:
        """A bare port number becomes a TCP endpoint with the listen backlog of 1024."""
        self.assertEqual(endpoint_description("8080"), "tcp:8080:backlog=1024")
        self.assertEqual(Settings(port="9000").endpoint, "tcp:9000:backlog=1024")

    def test_descriptions_get_the_backlog(self) -> None:
        """A TCP or TLS description with named options and no backlog gets the backlog of 1024."""
        for description in [
            "tcp:8080",
            "tcp:8080:interface=127.0.0.1",
            "tcp:8080:127.0.0.1",
            "tcp6:8080:interface=\\:\\:1",
            "ssl:8443:privateKey=key.pem",
        ]:
            self.assertEqual(endpoint_description(description), description + ":backlog=1024")

    def test_descriptions_pass_through(self) -> None:
        """A description that sets its backlog, uses positional options, or is not TCP is used as it is."""
        for description in [
            "tcp:8080:backlog=10",
            "tcp:8080:interface=127.0.0.1:backlog=2048",
            "tcp:8080:127.0.0.1:10",
            "tcp6:8080:100",
            "ssl:8443:key.pem",
            "unix:/tmp/ingest.sock",
        ]:
            self.assertEqual(endpoint_description(description), description)

    def test_bad_ports(self) -> None:
        """A port number out of range or a word that is no description raises ValueError."""
        for port in ["65536", "70000", "abc", ""]:
            self.assertRaises(ValueError, endpoint_description, port)


class WorkersTests(SynchronousTestCase):
    """``--workers`` and the worker id the supervisor gives its workers."""

    def setUp(self) -> None:
        self.cwd = temp_path(self)
        os.makedirs(self.cwd)

    def load(self, config_text: str | None = None, **values: str) -> Settings:
        if config_text is not None:
            with open(os.path.join(self.cwd, "tap.cfg"), "w", encoding="utf-8") as config_file:
                config_file.write(config_text)
        command_line: dict[str, str | None] = dict(given(**values))
        command_line[config.WORKER_ID] = values.get("worker_id")
        return load(command_line, None, cwd=self.cwd)

    def test_one_worker_by_default(self) -> None:
        """One process by default, and no worker id."""
        self.assertEqual((Settings().workers, Settings().worker_id), (1, None))
        self.assertEqual(self.load().workers, 1)

    def test_workers_from_file_and_command_line(self) -> None:
        """--workers comes from the command line, else the file, like every option."""
        self.assertEqual(self.load("[ingest]\nworkers = 4\n").workers, 4)
        self.assertEqual(self.load("[ingest]\nworkers = 4\n", workers="2").workers, 2)

    def test_workers_need_a_tcp_port(self) -> None:
        """More than one worker with an ssl or unix endpoint is an error naming --workers."""
        for port in ["ssl:8443:privateKey=key.pem", "unix:/tmp/ingest.sock", "tcp6:8080"]:
            error = self.assertRaises(ConfigError, self.load, workers="2", port=port)
            self.assertIn("--workers", str(error))
            self.assertIn(port, str(error))
            self.assertEqual(self.load(workers="1", port=port).port, port)

    def test_workers_with_tcp_ports(self) -> None:
        """A port number or a tcp description serves with workers."""
        for port in ["8080", "0", "tcp:8080", "tcp:0:interface=127.0.0.1", "tcp:port=80:backlog=10"]:
            self.assertEqual(self.load(workers="3", port=port).workers, 3)

    def test_unreadable_tcp_description_with_workers(self) -> None:
        """A tcp description the workers cannot use is an error naming --port."""
        for port in ["tcp:interface=127.0.0.1", "tcp:80:foo=1", "tcp:99999", "tcp:80:backlog=0"]:
            error = self.assertRaises(ConfigError, self.load, workers="2", port=port)
            self.assertIn("--port", str(error))

    def test_worker_id(self) -> None:
        """The supervisor gives each worker --worker-id K (1 or more) with --workers 1."""
        self.assertEqual(self.load(worker_id="3").worker_id, 3)
        self.assertRaises(ConfigError, self.load, worker_id="0")
        error = self.assertRaises(ConfigError, self.load, worker_id="1", workers="2")
        self.assertIn("--worker-id", str(error))
        self.assertRaises(ConfigError, self.load, worker_id="1", port="unix:/tmp/ingest.sock")

    def test_worker_id_is_no_config_file_key(self) -> None:
        """The worker id is the supervisor's business: a config file cannot set it."""
        error = self.assertRaises(ConfigError, self.load, "[ingest]\nworker-id = 1\n")
        self.assertIn("worker-id", str(error))

    def test_options_take_workers_and_worker_id(self) -> None:
        """The plugin's Options read both into the settings."""
        options = Options()
        empty = os.path.join(self.cwd, "empty.cfg")
        with open(empty, "w", encoding="utf-8") as config_file:
            config_file.write("[ingest]\n")
        options.parseOptions(["--config", empty, "--workers", "1", "--worker-id", "2", "--port", "9000"])
        self.assertEqual(options.settings, Settings(port="9000", worker_id=2))
        options = Options()
        self.assertRaises(
            UsageError, options.parseOptions, ["--config", empty, "--workers", "2", "--port", "unix:/x"]
        )


class ReusePortTests(SynchronousTestCase):
    """``--reuse-port``: a yes/no, for TCP ports only (its socket is made as a worker's is)."""

    def setUp(self) -> None:
        self.cwd = temp_path(self)
        os.makedirs(self.cwd)

    def load(self, **values: str) -> Settings:
        return load(given(**values), None, cwd=self.cwd)

    def test_off_by_default(self) -> None:
        """Off by default: a second ingest on the port fails to start, as it always has."""
        self.assertFalse(Settings().reuse_port)
        self.assertFalse(self.load().reuse_port)

    def test_yes_and_no(self) -> None:
        """yes/no, true/false, on/off, 1/0 in any case; ``True``/``False`` as a supervisor passes them."""
        for text in ["yes", "YES", "true", "True", "on", "1"]:
            self.assertTrue(self.load(reuse_port=text).reuse_port, text)
        for text in ["no", "false", "False", "off", "0", ""]:
            self.assertFalse(self.load(reuse_port=text).reuse_port, text)
        error = self.assertRaises(ConfigError, self.load, reuse_port="maybe")
        self.assertIn("--reuse-port", str(error))

    def test_needs_a_tcp_port(self) -> None:
        """With an ssl or unix endpoint, --reuse-port is an error naming it; with a TCP port it is taken."""
        for port in ["ssl:8443:privateKey=key.pem", "unix:/tmp/ingest.sock", "tcp6:8080"]:
            error = self.assertRaises(ConfigError, self.load, reuse_port="yes", port=port)
            self.assertIn("--reuse-port", str(error))
            self.assertEqual(self.load(reuse_port="no", port=port).port, port)
        for port in ["8080", "tcp:0:interface=127.0.0.1"]:
            self.assertTrue(self.load(reuse_port="yes", port=port).reuse_port)


class TcpAddressTests(SynchronousTestCase):
    def test_port_numbers_and_descriptions(self) -> None:
        """What Twisted's tcp endpoint reads: port, interface and backlog, by position or by name."""
        cases = {
            "8080": TcpAddress("", 8080, 1024),
            "0": TcpAddress("", 0, 1024),
            "tcp:8080": TcpAddress("", 8080, 1024),
            "tcp:0:interface=127.0.0.1": TcpAddress("127.0.0.1", 0, 1024),
            "tcp:port=80:backlog=5:interface=10.0.0.1": TcpAddress("10.0.0.1", 80, 5),
            "tcp:80:10.0.0.1:7": TcpAddress("10.0.0.1", 80, 7),
            "tcp:80:interface=\\:\\:1": TcpAddress("::1", 80, 1024),
            " 8080 ": TcpAddress("", 8080, 1024),
        }
        for port, address in cases.items():
            self.assertEqual(tcp_address(port), address, port)

    def test_other_endpoint_types_give_none(self) -> None:
        """ssl, unix and the rest are not plain TCP."""
        for port in [
            "ssl:8443:privateKey=key.pem",
            "unix:/tmp/s",
            "tcp6:8080",
            "systemd:domain=INET:index=0",
        ]:
            self.assertIsNone(tcp_address(port), port)

    def test_bad_tcp_descriptions_raise(self) -> None:
        """A tcp description with no port, a bad port or backlog, or an unknown part raises ValueError."""
        for port in [
            "tcp:",
            "tcp:interface=x",
            "tcp:http",
            "tcp:65536",
            "tcp:80:backlog=0",
            "tcp:80:backlog=x",
            "tcp:80:a:1:extra",
            "tcp:80:port=81",
            "tcp:80:reuse=1",
            "70000",
        ]:
            self.assertRaises(ValueError, tcp_address, port)

    def test_description_round_trip(self) -> None:
        """`tcp_description` writes what `tcp_address` reads back, escapes included."""
        for address in [
            TcpAddress("", 0, 1024),
            TcpAddress("127.0.0.1", 8080, 1),
            TcpAddress("::1", 65535, 50),
            TcpAddress("fe80::1%eth0", 80, 1024),
            TcpAddress("odd=name\\", 80, 1024),
        ]:
            self.assertEqual(tcp_address(tcp_description(address)), address, address)
        self.assertEqual(tcp_description(TcpAddress("::1", 80, 5)), "tcp:80:interface=\\:\\:1:backlog=5")


class OptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = temp_path(self)
        os.makedirs(self.directory)
        self.empty_config = os.path.join(self.directory, "empty.cfg")
        with open(self.empty_config, "w", encoding="utf-8") as config_file:
            config_file.write("[ingest]\n")

    def test_no_arguments_give_defaults(self) -> None:
        """With no arguments and no tap.cfg in the working directory, Options gives the defaults."""
        options = Options()
        previous = os.getcwd()
        os.chdir(self.directory)
        try:
            options.parseOptions([])
        finally:
            os.chdir(previous)
        self.assertEqual(options.settings, Settings())

    def test_options_are_applied(self) -> None:
        """--port and --threads given on the command line are in the settings."""
        options = Options()
        options.parseOptions(["--config", self.empty_config, "--port", "9000", "--threads", "0"])
        self.assertEqual(options.settings, Settings(port="9000", threads=0))

    def test_command_line_beats_config_file(self) -> None:
        """A value on the command line beats the one in --config's file."""
        path = os.path.join(self.directory, "ports.cfg")
        with open(path, "w", encoding="utf-8") as config_file:
            config_file.write("[ingest]\nport = 7000\nthreads = 2\n")
        options = Options()
        options.parseOptions(["--config", path, "--port", "9000"])
        self.assertEqual(options.settings, Settings(port="9000", threads=2))

    def test_bad_value_is_a_usage_error(self) -> None:
        """A bad value is reported as a UsageError naming the option, which twistd prints with usage."""
        options = Options()
        error = self.assertRaises(
            UsageError, options.parseOptions, ["--config", self.empty_config, "--threads", "-1"]
        )
        self.assertIn("--threads", str(error))

    def test_missing_config_file_is_a_usage_error(self) -> None:
        """--config naming a missing file is a UsageError."""
        options = Options()
        missing = os.path.join(self.directory, "missing.cfg")
        self.assertRaises(UsageError, options.parseOptions, ["--config", missing])
