"""ingest: an HTTP metrics ingestion service on Twisted.

The path of a sample: socket -> framing (protocol, http11) -> routes (api) ->
body decoding in the parse pool (pool, bodies, sample) -> buffer -> flusher ->
storage.  stats and errors are side modules every layer may use.
"""

__version__ = "0.1.0"
