"""The import rules of STYLE.md: data flows one way, the core imports no Twisted."""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ingest")

# The flow, first to last: a module may import only modules further along, plus the side modules.
FLOW = [
    "protocol",
    "twisted_internals",
    "pipeline",
    "timeouts",
    "http11",
    "api",
    "pool",
    "bodies",
    "lineproto",
    "remote_write",
    "otlp",
    "collectd",
    "sample",
    "flusher",
    "headroom",
    "retention",
    "sink",
    "forwarding",
    "buffer",
    "storage",
]
SIDE = {"errors", "messages", "stats", "ratelimit", "exposition", "auth", "workerstats"}
# The wiring, and client tools that stand beside the service rather than in its flow (ingest-load).
WIRING = {"tap", "workers", "reload", "__init__", "load"}
# Client tools: they measure the service from the outside and import nothing of the package.
CLIENTS = {"load"}
# Side tools that read what the service stored: they may import storage and sample only, and no Twisted.
READERS = {"reader"}
PURE = {
    "pipeline",
    "timeouts",
    "http11",
    "bodies",
    "sample",
    "buffer",
    "stats",
    "errors",
    "messages",
    "config",
    "storage",
    "forwarding",
    "lineproto",
    "remote_write",
    "otlp",
    "collectd",
    "ratelimit",
    "exposition",
    "workerstats",
}


def imports(module: str) -> set[str]:
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


class LayerTests(SynchronousTestCase):
    def test_every_module_is_placed(self) -> None:
        """Each module of the package has a place in the flow, the side, the wiring or the readers."""
        modules = {name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py")}
        self.assertEqual(modules - set(FLOW) - SIDE - WIRING - READERS - {"config"}, set())

    def test_flow_goes_one_way(self) -> None:
        """No module imports one that comes before it in the flow."""
        for index, module in enumerate(FLOW):
            own = {
                name.split(".")[1]
                for name in imports(module)
                if name.startswith("ingest.") and name.count(".") == 1
            }
            backwards = own & set(FLOW[: index + 1])
            self.assertEqual(backwards, set(), f"{module} imports {backwards}")

    def test_side_modules_import_no_flow(self) -> None:
        """errors, messages and stats import nothing of the flow."""
        for module in SIDE:
            own = {
                name.split(".")[1]
                for name in imports(module)
                if name.startswith("ingest.") and name.count(".") == 1
            }
            self.assertEqual(own & set(FLOW), set(), module)

    def test_pure_core_has_no_twisted(self) -> None:
        """The pure core imports no Twisted."""
        for module in PURE:
            twisted = {name for name in imports(module) if name.split(".")[0] == "twisted"}
            self.assertEqual(twisted, set(), module)

    def test_readers_import_only_storage_and_sample(self) -> None:
        """A reader imports, of the package, only storage and sample, and imports no Twisted."""
        for module in READERS:
            own = {name.split(".")[1] for name in imports(module) if name.startswith("ingest.")}
            self.assertEqual(own - {"storage", "sample"}, set(), module)
            twisted = {name for name in imports(module) if name.split(".")[0] == "twisted"}
            self.assertEqual(twisted, set(), module)

    def test_clients_import_nothing_of_the_service(self) -> None:
        """A client tool (ingest-load) imports no module of the package: it talks to the service over HTTP."""
        for module in CLIENTS:
            own = {name for name in imports(module) if name.split(".")[0] == "ingest"}
            self.assertEqual(own, set(), module)
