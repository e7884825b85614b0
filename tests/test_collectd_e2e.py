"""End to end: the real collectd posts to ``twistd -n ingest`` with ``write_http``, ``Format "JSON"``.

collectd (Debian's ``collectd-core``, with ``libyajl2`` and libcurl for
``write_http``) runs for `RUN_SECONDS` with ``Interval 1`` and the cpu,
memory, load and interface plugins.  Beside ``write_http`` it runs the csv
plugin, which writes every value it is handed to files of its own: that
is what collectd says it sent, and each of its values must be stored once,
with the name, tags and timestamp of PRODUCT.md's mapping and the value (the
csv plugin writes gauges with 6 decimals, ``write_http`` with 15 digits), and
nothing else stored.  collectd's log (the logfile plugin, info level, with
``LogHttpError true``) must show no error of ``write_http``: collectd never
retries a POST, so any failure there is data lost.

Skipped, with the reason printed, only where collectd or one of its plugins
is not installed (``apt-get install collectd-core libyajl2``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers_twistd import TWISTD, reap, start_twistd, temp_cwd
from tests.segments import read_segments

PLUGIN_DIR = "/usr/lib/collectd"
PLUGINS = ("logfile", "csv", "write_http", "cpu", "memory", "load", "interface")
RUN_SECONDS = 11.0
HOST = "e2e-host"

CONFIG = """\
Hostname "{host}"
FQDNLookup false
Interval 1
BaseDir "{cwd}"
PIDFile "{cwd}/collectd.pid"
PluginDir "{plugin_dir}"

LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{cwd}/collectd.log"
  Timestamp true
</Plugin>

LoadPlugin cpu
LoadPlugin memory
LoadPlugin load
LoadPlugin interface

LoadPlugin csv
<Plugin csv>
  DataDir "{cwd}/csv"
  StoreRates false
</Plugin>

<LoadPlugin write_http>
  FlushInterval 1
</LoadPlugin>
<Plugin write_http>
  <Node "ingest">
    URL "http://127.0.0.1:{port}/collectd"
    Format "JSON"
    StoreRates false
    BufferSize 4096
    LogHttpError true
  </Node>
</Plugin>
"""

# The csv plugin's files: <DataDir>/<host>/<plugin>[-<plugin_instance>]/<type>[-<type_instance>]-<date>
CSV_FILE = re.compile(r"(?P<type>[^-]+)(?:-(?P<type_instance>.*))?-\d{4}-\d{2}-\d{2}$")


def find_collectd() -> str:
    """The collectd binary (in /usr/sbin, which a user's PATH may lack); raises `SkipTest` without it."""
    binary = shutil.which("collectd") or shutil.which("collectd", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        raise SkipTest("collectd is not installed (apt-get install collectd-core libyajl2)")
    missing = [name for name in PLUGINS if not os.path.exists(os.path.join(PLUGIN_DIR, name + ".so"))]
    if missing:
        raise SkipTest(f"collectd plugins not installed in {PLUGIN_DIR}: {', '.join(missing)}")
    return binary


def nanoseconds(epoch: str) -> int:
    """collectd's ``%.3f`` seconds as integer nanoseconds, from the digits."""
    whole, _, fraction = epoch.partition(".")
    return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])


def csv_values(directory: str) -> dict[tuple[str, tuple[tuple[str, str], ...], int], str]:
    """What collectd wrote through its csv plugin, keyed as PRODUCT.md stores it: (name, tags, ns) -> text."""
    sent: dict[tuple[str, tuple[tuple[str, str], ...], int], str] = {}
    for host in os.listdir(directory):
        for plugin_dir in os.listdir(os.path.join(directory, host)):
            plugin, _, plugin_instance = plugin_dir.partition("-")
            for file_name in os.listdir(os.path.join(directory, host, plugin_dir)):
                match = CSV_FILE.match(file_name)
                assert match, file_name
                type_, type_instance = match.group("type"), match.group("type_instance") or ""
                tags = tuple(
                    (key, text)
                    for key, text in (
                        ("host", host),
                        ("plugin_instance", plugin_instance),
                        ("type_instance", type_instance),
                    )
                    if text
                )
                with open(os.path.join(directory, host, plugin_dir, file_name), encoding="utf-8") as csv:
                    header, *rows = csv.read().splitlines()
                dsnames = header.split(",")[1:]
                for row in rows:
                    epoch, *values = row.split(",")
                    for dsname, value in zip(dsnames, values, strict=True):
                        name = f"{plugin}.{type_}" if dsname == "value" else f"{plugin}.{type_}.{dsname}"
                        key = (name, tags, nanoseconds(epoch))
                        assert key not in sent, key
                        sent[key] = value
    return sent


class CollectdEndToEndTests(SynchronousTestCase):
    def test_real_collectd(self) -> None:
        """Every value collectd sent for 11 s is stored once as PRODUCT.md maps it; collectd saw no error."""
        collectd = find_collectd()
        if TWISTD is None:
            self.fail("twistd is not installed: pip install . first")
        cwd = temp_cwd(self)
        data_dir = os.path.join(cwd, "data")
        service = start_twistd(
            self,
            cwd,
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--data-dir",
            data_dir,
            "--flush-interval",
            "0.05",
        )
        config = os.path.join(cwd, "collectd.conf")
        with open(config, "w", encoding="utf-8") as file:
            file.write(CONFIG.format(host=HOST, cwd=cwd, plugin_dir=PLUGIN_DIR, port=service.port))
        with open(os.path.join(cwd, "collectd.out"), "wb") as output:
            sender = subprocess.Popen([collectd, "-f", "-C", config], stdout=output, stderr=subprocess.STDOUT)
        self.addCleanup(reap, sender)
        time.sleep(RUN_SECONDS)  # the sender's own schedule: what it sends in this time is what is checked
        self.assertIsNone(sender.poll(), "collectd exited early: see collectd.log")
        sender.send_signal(signal.SIGTERM)  # collectd flushes write_http's buffer on its way out
        self.assertEqual(sender.wait(timeout=20), 0)
        self.assertEqual(service.stop(), -signal.SIGTERM)

        log = read(os.path.join(cwd, "collectd.log")) + read(os.path.join(cwd, "collectd.out"))
        self.assertIn("Exiting normally", log)
        failures = [
            line
            for line in log.splitlines()
            if "write_http" in line and re.search(r"error|fail", line, re.IGNORECASE)
        ]
        self.assertEqual(failures, [], "collectd logged write_http failures")

        sent = csv_values(os.path.join(cwd, "csv"))
        stored = read_segments(data_dir)
        names = {name for name, _, _ in sent}
        for name in ("cpu.cpu", "memory.memory", "load.load.shortterm", "interface.if_octets.rx"):
            self.assertIn(name, names)
        seconds = {ns // 1_000_000_000 for _, _, ns in sent}
        self.assertGreaterEqual(len(seconds), 8, "collectd ran for at least 8 intervals")
        self.assertEqual(len(stored), len(sent), "one stored sample per value collectd wrote")
        got: dict[tuple[str, tuple[tuple[str, str], ...], int], Any] = {}
        for sample in stored:
            self.assertEqual(sorted(sample), ["name", "tags", "timestamp", "value"])
            self.assertEqual(sample["tags"]["host"], HOST)
            key = (sample["name"], tuple(sample["tags"].items()), sample["timestamp"])
            self.assertNotIn(key, got, "stored twice")
            got[key] = sample["value"]
        self.assertEqual(set(got), set(sent))
        for key, text in sent.items():
            value = got[key]
            if "." in text:  # a gauge: 6 decimals in the csv file
                self.assertTrue(
                    math.isclose(value, float(text), rel_tol=1e-12, abs_tol=1e-6), (key, text, value)
                )
            else:  # a derive: the same integer
                self.assertEqual(value, int(text), key)
        stored_load = [tags for name, tags, _ in got if name == "load.load.shortterm"]
        self.assertEqual(set(stored_load), {(("host", HOST),)})
        stored_memory = {tags for name, tags, _ in got if name == "memory.memory"}
        self.assertIn((("host", HOST), ("type_instance", "used")), stored_memory)


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""
