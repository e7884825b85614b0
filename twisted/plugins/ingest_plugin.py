"""The twistd plugin: ``twistd -n ingest``.  Imports ingest only when used."""

from twisted.application.service import ServiceMaker

ingest = ServiceMaker("ingest", "ingest.tap", "HTTP metrics ingestion service", "ingest")
