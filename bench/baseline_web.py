"""The baseline of issue 5: stock twisted.web doing ingest's work, as fast as stock goes.

A `Resource` for ``POST /metrics``: parse the body with ujson, validate name
and value, buffer the samples, flush them as NDJSON to a file every 100 ms
(a `LoopingCall`), answer ``202 {"accepted": N}``.  Served by
``Site(root, parsePOSTFormSubmission=False)``, the fastest stock
configuration (the default form parsing costs about half the speed).

    python bench/baseline_web.py --port 8081 [--data FILE]
"""

from __future__ import annotations

import argparse
import math
import os

import ujson
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import Site


class Metrics(Resource):
    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self.pending: list[str] = []
        self.file = open(path, "ab")  # open for the life of the process

    def render_POST(self, request):  # twisted.web's spelling
        request.setHeader(b"content-type", b"application/json")
        try:
            document = ujson.loads(request.content.read())
        except ValueError:
            request.setResponseCode(400)
            return b'{"error":"malformed JSON"}'
        samples = document if isinstance(document, list) else [document]
        for sample in samples:
            name, value = sample.get("name"), sample.get("value")
            if not isinstance(name, str) or not name or isinstance(value, bool):
                request.setResponseCode(400)
                return b'{"error":"invalid sample"}'
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                request.setResponseCode(400)
                return b'{"error":"invalid sample"}'
            self.pending.append(ujson.dumps(sample))
        request.setResponseCode(202)
        return b'{"accepted":%d}' % len(samples)

    def flush(self) -> None:
        if self.pending:
            data = "\n".join(self.pending) + "\n"
            self.pending = []
            self.file.write(data.encode())
            self.file.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--data", default=os.path.join(os.getcwd(), "baseline.ndjson"))
    args = parser.parse_args()
    root = Resource()
    metrics = Metrics(args.data)
    root.putChild(b"metrics", metrics)
    LoopingCall(metrics.flush).start(0.1, now=False)
    reactor.listenTCP(
        args.port, Site(root, parsePOSTFormSubmission=False), backlog=1024, interface="127.0.0.1"
    )
    reactor.run()


if __name__ == "__main__":
    main()
