"""The twistd plugin is found, imports, and shows the options of this issue."""

from __future__ import annotations

import importlib.util
import os

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = [
    "port",
    "data-dir",
    "threads",
    "flush-interval",
    "max-buffer",
    "max-body",
    "idle-timeout",
    "segment-bytes",
    "config",
    "ack",
    "rate-limit",
    "rate-burst",
    "auth-tokens",
    "max-connections",
    "header-timeout",
    "workers",
]


class PluginTests(SynchronousTestCase):
    def test_plugin_file_imports(self) -> None:
        """The plugin file imports cleanly and names ingest.tap (a plugin that fails to import vanishes)."""
        path = os.path.join(ROOT, "twisted", "plugins", "ingest_plugin.py")
        spec = importlib.util.spec_from_file_location("ingest_plugin_under_test", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.assertEqual(module.ingest.tapname, "ingest")
        self.assertEqual(module.ingest.module, "ingest.tap")

    def test_plugin_discovered(self) -> None:
        """twistd's plugin search finds a service maker called ingest."""
        names = [maker.tapname for maker in getPlugins(IServiceMaker, twisted.plugins)]
        self.assertIn("ingest", names)

    def test_no_init_under_twisted(self) -> None:
        """twisted/ and twisted/plugins/ carry no __init__.py (one would shadow Twisted itself)."""
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(ROOT, "twisted", "plugins", "__init__.py")))

    def test_options_listed(self) -> None:
        """--help lists exactly the options this service has built, no more."""
        from ingest.tap import Options

        text = str(Options())
        for option in OPTIONS:
            self.assertIn(f"--{option}=", text)
