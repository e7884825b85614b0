"""The tests' one reader of what a service stored: the samples in a data directory's segment files.

A segment is NDJSON, one sample a line (``segment-<ns>.ndjson``, with
``-w<K>`` for worker K, and ``.gz`` when an operator gzipped it: see
`ingest.storage`).  `read_segments` reads every file of the directory (not
its subdirectories, such as the workers' figures in ``.stats``), not
only what `ingest.storage` calls a segment, so a test does not trust the
code under test to find what it wrote; and it imports nothing of
``ingest``, so tests that run the service as a subprocess use it too.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from typing import Any


def read_segments(directory: str, only: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Every sample stored in the files of `directory`, file by file in name order; [] if there is none.

    `only`, if given, picks the files to read by name.  A name ending in
    ``.gz`` is read through gzip.  Strict: a line that is not JSON raises
    `ValueError`, so read a data directory only after the service has
    repaired it (start-up) or stopped cleanly, and a directory holding a
    segment both plain and gzipped counts its samples twice.
    """
    if not os.path.isdir(directory):
        return []
    samples = []
    for name in sorted(os.listdir(directory)):
        if (only is not None and not only(name)) or os.path.isdir(os.path.join(directory, name)):
            continue
        with open(os.path.join(directory, name), "rb") as segment:
            data = segment.read()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        samples += [json.loads(line) for line in data.splitlines()]
    return samples
