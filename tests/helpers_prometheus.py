"""Running the real Prometheus server as a remote-write sender, for the end-to-end test and the fixture.

`start_prometheus` runs ``prometheus`` (the Debian package installs it) in a
directory of the caller's, scraping its own ``/metrics`` every second and
remote-writing everything to `url` (`config` is the exact configuration, so
the docs can quote it).  `counters` reads a Prometheus' own figures
(``prometheus_remote_storage_samples_total`` and friends) from its
``/metrics``.  Blocking helpers, for `SynchronousTestCase` tests and scripts.

Timing: Prometheus replays its (empty) WAL and sends its first batch about
6 to 7 s after it starts; with ``batch_send_deadline: 1s`` a batch then
leaves every second.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import time

from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = shutil.which("prometheus")
START_TIMEOUT = 30.0

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: {url}
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
    metadata_config:
      send_interval: 1s
"""
"""The configuration `start_prometheus` writes: itself scraped every second, everything remote-written."""

QUIET_CONFIG = CONFIG.replace('    static_configs:\n      - targets: ["{target}"]\n', "")
"""The same job without its target, and the same remote write: reloaded into a running Prometheus, it
ends the self-scrape, whose series then get staleness markers (a job removed whole would get none), and
keeps the queue, which drains and stays empty."""


def free_port() -> int:
    """A TCP port free on the loopback interface a moment ago (Prometheus cannot listen on port 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Prometheus:
    """One running ``prometheus``: its process, its address, its directory and log."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, directory: str, url: str) -> None:
        self.process = process
        self.port = port
        self.directory = directory
        self.url = url

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(os.path.join(self.directory, "prometheus.log"), encoding="utf-8", errors="replace") as log:
            return log.read()

    def stop_scraping(self) -> None:
        """Reload into `QUIET_CONFIG`: no more samples after the self-scrape's staleness markers."""
        write_config(self.directory, QUIET_CONFIG.format(url=self.url))
        self.process.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def write_config(directory: str, text: str) -> str:
    path = os.path.join(directory, "prometheus.yml")
    with open(path, "w", encoding="utf-8") as config:
        config.write(text)
    return path


def start_prometheus(directory: str, url: str, timeout: float = START_TIMEOUT) -> Prometheus:
    """Start ``prometheus`` in `directory`, remote-writing to `url`; returns once ``/-/ready`` says so.

    The caller stops it (`Prometheus.stop`).  Raises `RuntimeError` when it exits or is not ready
    within `timeout` seconds (it is then killed).
    """
    if PROMETHEUS is None:
        raise RuntimeError("prometheus is not installed")
    port = free_port()
    config = write_config(directory, CONFIG.format(target=f"127.0.0.1:{port}", url=url))
    with open(os.path.join(directory, "prometheus.log"), "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={os.path.join(directory, 'tsdb')}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, port, directory, url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if get(port, "/-/ready")[0] == 200:
            return prometheus
        time.sleep(0.1)
    if process.poll() is None:
        process.kill()
    process.wait()
    raise RuntimeError(f"prometheus did not start:\n{prometheus.log()}")


def get(port: int, path: str) -> tuple[int, bytes]:
    """``GET path`` on the loopback; ``(0, b"")`` when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def counters(port: int) -> dict[str, float]:
    """The ``prometheus_remote_storage_*`` figures of the Prometheus on `port`, summed over their labels.

    Counters are named as exposed (``..._total``).  Raises `RuntimeError` when ``/metrics`` does not
    answer.
    """
    status, text = get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode("utf-8")):
        for sample in family.samples:
            if sample.name.startswith("prometheus_remote_storage_"):
                figures[sample.name] = figures.get(sample.name, 0.0) + sample.value
    return figures


def samples_sent(figures: dict[str, float]) -> float:
    """Samples Prometheus sent: every attempt, so a retried sample counts again (and in
    ``..._samples_retried_total``); the counter's name changed in 2.x."""
    for name in (
        "prometheus_remote_storage_samples_total",
        "prometheus_remote_storage_succeeded_samples_total",
    ):
        if name in figures:
            return figures[name]
    raise KeyError("no remote storage samples counter")
