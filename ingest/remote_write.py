"""PLACEHOLDER on branch `wiring` only: the `remote` branch replaces this file with the real decoder.

On a merge conflict, keep the other side (the real module).  Never merged to main as it is.
"""

from __future__ import annotations

from ingest.errors import IngestError
from ingest.sample import Converted


def decode(body: bytes, max_body: int) -> Converted:
    raise IngestError(501, "not implemented", "remote write placeholder")
