from setuptools import setup

setup(
    name="ingest",
    version="0.1.0",
    description="High-performance HTTP metrics ingestion service on Twisted",
    python_requires=">=3.11",
    packages=["ingest", "twisted.plugins"],
    package_data={"twisted": ["plugins/ingest_plugin.py"]},
    entry_points={"console_scripts": ["ingest-read = ingest.reader:main", "ingest-load = ingest.load:main"]},
    install_requires=["Twisted[tls]>=24.7", "ujson>=5.10", "prometheus_client>=0.20", "treq>=24.9"],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6.100",
            "ruff==0.17.6",
            "mypy==2.4.1",
            "mypy-zope==1.0.17",
            "influxdb-client>=1.40",
        ],
    },
)
