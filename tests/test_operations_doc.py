"""docs/OPERATIONS.md and contrib/ingest.service cannot drift from the code.

The option table of the operations guide (the table right after its
``<!-- options-table`` marker) must list exactly the options the plugin's
`Options` accepts (twistd's generic ``--help`` and ``--version`` aside), each
with the default of `ingest.config.Settings`, which tap.cfg must hold too,
and must name as tap.cfg keys exactly the keys of tap.cfg.

The systemd unit must pass ``systemd-analyze verify`` where that command is
installed, and the arguments of its ``ExecStart=`` must be accepted by
twistd and by `Options`, wherever the tests run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import unittest

from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from ingest import config
from ingest.tap import Options
from ingest.workers import STOP_GRACE
from tests.helpers_twistd import TWISTD
from tests.tempdir import temp_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATIONS = os.path.join(ROOT, "docs", "OPERATIONS.md")
UNIT = os.path.join(ROOT, "contrib", "ingest.service")
TAP_CFG = os.path.join(ROOT, "tap.cfg")

TABLE_MARKER = "<!-- options-table"
GENERIC_OPTIONS = {"help", "version"}
"""Options every `twisted.python.usage.Options` has; the guide mentions them outside the table."""
CODE = re.compile(r"`([^`]*)`")


class OptionRow:
    """One row of the option table: ``| `--name` | `key` or - | default | meaning |``."""

    def __init__(self, line: str) -> None:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4:
            raise ValueError(f"expected 4 cells (option, tap.cfg key, default, meaning): {line}")
        option = re.fullmatch(r"`--([a-z][a-z-]*)`", cells[0])
        if option is None:
            raise ValueError(f"the first cell must be one option in backticks: {line}")
        self.option = option.group(1)
        key = CODE.fullmatch(cells[1])
        if key is None and cells[1] != "-":
            raise ValueError(f"the tap.cfg cell must be a key in backticks or '-': {line}")
        self.key = key.group(1) if key else None
        default = CODE.search(cells[2])
        self.default = default.group(1) if default else None
        """The first code span of the default cell; None when it has none (no value)."""


def option_table(text: str) -> list[OptionRow]:
    """The rows of the table that follows the marker line; raises ValueError when it is not there."""
    lines = text.splitlines()
    starts = [number for number, line in enumerate(lines) if line.startswith(TABLE_MARKER)]
    if len(starts) != 1:
        raise ValueError(f"expected one {TABLE_MARKER} line, found {len(starts)}")
    table: list[str] = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table or line.strip():
            break
    if len(table) < 3:
        raise ValueError(f"no table right after the {TABLE_MARKER} line")
    return [OptionRow(line) for line in table[2:]]  # past the header and its rule


def unit_settings(path: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's settings by section and key, each key's values in order.

    As systemd reads it: ``#`` and ``;`` start comment lines, and a line
    ending in a backslash goes on on the next one.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    with open(path, encoding="utf-8") as unit:
        for raw in unit:
            line = raw.strip()
            if not pending and (not line or line[0] in "#;"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if line.startswith("[") and line.endswith("]"):
                section = sections.setdefault(line[1:-1], {})
                continue
            if section is None or "=" not in line:
                raise ValueError(f"{path}: not a setting in a section: {line}")
            key, value = line.split("=", 1)
            section.setdefault(key.strip(), []).append(value.strip())
    return sections


def exec_start(path: str) -> list[str]:
    """The words of the unit's one ``ExecStart=``, split as a shell would split them.

    systemd splits the same way for what this check accepts.

    Raises ValueError for what this check cannot read as systemd would:
    a prefix such as ``-`` or ``+``, ``%`` specifiers, ``$`` variables.
    """
    values = unit_settings(path).get("Service", {}).get("ExecStart", [])
    if len(values) != 1:
        raise ValueError(f"expected one ExecStart= in [Service], found {len(values)}")
    value = values[0]
    if value[:1] in "-@:+!" or "%" in value or "$" in value:
        raise ValueError(f"ExecStart= uses systemd syntax this check does not read: {value}")
    return shlex.split(value)


def with_config(arguments: list[str], path: str) -> list[str]:
    """`arguments` with the value of ``--config`` replaced by `path`."""
    replaced = []
    words = iter(arguments)
    for word in words:
        if word == "--config":
            next(words)
            replaced += ["--config", path]
        elif word.startswith("--config="):
            replaced.append(f"--config={path}")
        else:
            replaced.append(word)
    return replaced


class OptionTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(OPERATIONS, encoding="utf-8") as guide:
            self.rows = option_table(guide.read())
        self.tap_cfg = config.read_config_file(TAP_CFG)

    def test_table_lists_exactly_the_plugin_options(self) -> None:
        """Every option `Options` accepts is in the table once, and the table names no other."""
        accepted = {name.rstrip("=") for name in Options().longOpt} - GENERIC_OPTIONS
        listed = [row.option for row in self.rows]
        self.assertEqual(sorted(listed), sorted(set(listed)), "an option is listed twice")
        self.assertEqual(sorted(listed), sorted(accepted))

    def test_table_names_exactly_the_tap_cfg_keys(self) -> None:
        """The tap.cfg column names each key of tap.cfg, under its option's name, and no other option."""
        file_options = {name for name, _ in config.OPTIONS}
        for row in self.rows:
            if row.option in file_options:
                self.assertEqual(row.key, row.option, f"--{row.option}")
            else:
                self.assertIsNone(row.key, f"--{row.option} is not read from a config file")
        self.assertEqual(sorted(row.key for row in self.rows if row.key), sorted(self.tap_cfg))

    def test_tap_cfg_holds_the_built_in_defaults(self) -> None:
        """Reading tap.cfg gives the same settings as the built-in defaults."""
        self.assertEqual(config.load({}, TAP_CFG), config.Settings())

    def test_defaults_are_the_code_defaults(self) -> None:
        """Each default in the table, read as the option's value, gives the built-in default.

        An option without a default (``--worker-id``, ``--given-options``) shows no value; the
        default of ``--config`` is the file the plugin looks for.
        """
        cwd = temp_path(self)
        os.makedirs(cwd)  # no tap.cfg here: only the value under test counts
        defaults = config.Settings()
        for row in self.rows:
            field = row.option.replace("-", "_")
            if row.option == "config":
                self.assertTrue((row.default or "").endswith(config.DEFAULT_CONFIG), row.default)
            elif row.option == config.GIVEN:
                self.assertIsNone(row.default, f"--{row.option} has no default")
            elif not hasattr(defaults, field):
                self.fail(f"--{row.option}: no rule for checking its default; add one here")
            elif getattr(defaults, field) is None:
                self.assertIsNone(row.default, f"--{row.option} has no default")
            else:
                settings = config.load({row.option: row.default or ""}, None, cwd=cwd)
                self.assertEqual(getattr(settings, field), getattr(defaults, field), f"--{row.option}")

    def test_table_reader_refuses_a_malformed_row(self) -> None:
        """A row with a stray pipe or without its option in backticks is an error, not a silent skip."""
        for line in ("| `--port` | `port` | `8080` | a | b |", "| --port | `port` | `8080` | a |"):
            with self.assertRaises(ValueError):
                OptionRow(line)


class UnitFileTests(SynchronousTestCase):
    def test_exec_start_accepted_by_twistd_and_options(self) -> None:
        """ExecStart's arguments parse: twistd's own, and those after ``ingest`` by the plugin's Options.

        ``--config`` names /etc/ingest/tap.cfg, which the install steps copy
        from the repository's tap.cfg: that file is read in its place.
        """
        words = exec_start(UNIT)
        self.assertTrue(os.path.isabs(words[0]) and os.path.basename(words[0]) == "twistd", words[0])
        arguments = with_config(words[1:], TAP_CFG)
        self.assertIn("ingest", arguments)
        options = Options()
        try:
            options.parseOptions(arguments[arguments.index("ingest") + 1 :])
            twistd = ServerOptions()
            twistd.parseOptions(arguments)
        except UsageError as error:
            self.fail(f"ExecStart= is refused: {error}")
        self.assertEqual(twistd.subCommand, "ingest")
        self.assertTrue(twistd["nodaemon"], "systemd supervises the process: --nodaemon")

    def test_stop_settings(self) -> None:
        """systemd stops it with SIGTERM to the main process only, and waits past a supervisor's grace."""
        service = unit_settings(UNIT)["Service"]
        self.assertEqual(service.get("KillSignal"), ["SIGTERM"])
        self.assertEqual(service.get("KillMode"), ["mixed"])
        timeout = service.get("TimeoutStopSec", ["90"])[-1]  # systemd's default is 90 s
        self.assertRegex(timeout, r"^[0-9]+s?$")
        self.assertGreater(int(timeout.rstrip("s")), STOP_GRACE)

    def test_restart_settings(self) -> None:
        """systemd starts it again however it ends, a clean exit included; ``systemctl stop`` still stops it.

        ``always``, not ``on-failure``: a supervisor left without workers exits
        with status 0, which ``on-failure`` counts as clean and leaves down.
        """
        service = unit_settings(UNIT)["Service"]
        self.assertEqual(service.get("Restart"), ["always"])

    def test_systemd_analyze_verify(self) -> None:
        """``systemd-analyze verify`` reports nothing about the unit, its ExecStart pointed at this twistd.

        The unit names /opt/ingest/bin/twistd, which verify requires to
        exist; the copy names the twistd of the interpreter running the
        tests.  ``--man=no``: verify would otherwise look up man pages named
        in Documentation=, which needs man-db.  Any output fails the test:
        verify reports a misspelt key or a bad value as a warning and still
        exits 0.
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed: the unit file was not verified")
        if TWISTD is None:
            raise unittest.SkipTest("twistd is not installed (pip install .): the unit file was not verified")
        with open(UNIT, encoding="utf-8") as unit:
            text = unit.read()
        binary = exec_start(UNIT)[0]
        copy_dir = temp_path(self)
        os.makedirs(copy_dir)
        copy = os.path.join(copy_dir, "ingest.service")
        with open(copy, "w", encoding="utf-8") as unit:
            unit.write(text.replace(f"ExecStart={binary} ", f"ExecStart={TWISTD} "))
        self.assertEqual(exec_start(copy)[0], TWISTD)
        result = subprocess.run(
            [analyze, "verify", "--man=no", copy],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual((result.returncode, result.stdout), (0, ""))

    def test_hardening(self) -> None:
        """The unit is hardened (issue 15: rated 9.2, UNSAFE, before): a read-only system but for the state
        directory, no capabilities, a system call allow list, a memory limit, and ``systemctl reload``.

        Where ``systemd-analyze`` is installed, ``security --offline=yes`` rates the unit's exposure
        under 5 (1.1 when written).
        """
        service = unit_settings(UNIT)["Service"]
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "UMask": "0027",
            "StateDirectoryMode": "0750",
            "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "ExecReload": "/bin/kill -HUP $MAINPID",
        }.items():
            self.assertEqual(service.get(key), [value], key)
        self.assertRegex(service["MemoryMax"][0], r"^[0-9]+[MG]$")
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed: the exposure was not rated")
        result = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", UNIT],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        rating = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        if rating is None:
            raise unittest.SkipTest(
                f"this systemd-analyze cannot rate a unit offline: {result.stderr.strip()}"
            )
        self.assertLess(float(rating.group(1)), 5.0, result.stdout)
