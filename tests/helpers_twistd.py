"""Running `twistd -n ingest` as a subprocess for end-to-end tests (what it stored: `tests.segments`).

The source tree goes first on ``PYTHONPATH``, so the service under test is
this checkout's code, not an installed copy.  Each service runs in a
working directory the test owns (so no ``tap.cfg`` of the repository is
read), with ``--pidfile=`` (so several may run at once) and its output in a
log file there; `start_twistd` waits, against a deadline, for the
``ingest listening on ... port=N`` line (so services can listen on port 0),
then until ``GET /ping`` is answered: the port is open before twistd runs
its reactor, and only the running reactor handles SIGTERM (before, the
signal kills the process as ``kill`` would, with no shutdown).

The helpers block (``subprocess``, ``time.sleep``): they are for
`SynchronousTestCase` tests, which trial and pytest run alike.  Every wait
is bounded, and a service still running when its test ends is killed and
reaped by a cleanup.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = shutil.which("twistd", path=os.path.dirname(sys.executable)) or shutil.which("twistd")
LISTENING = re.compile(r"ingest listening on .*port=(\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def environment() -> dict[str, str]:
    """The source tree first on the path, so the code under test is this checkout's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def temp_cwd(case: SynchronousTestCase) -> str:
    """A new empty directory for a service to run in, removed when `case` ends."""
    cwd = tempfile.mkdtemp(prefix="ingest-e2e-")
    case.addCleanup(shutil.rmtree, cwd, True)
    return cwd


class Twistd:
    """One running ``twistd -n ingest``: its process, the port it listens on, its log file."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: str) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the service has written to stdout and stderr so far."""
        return read_log(self.log_path)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `signum` and wait for the exit; returns the exit status (``-signum`` after a clean stop).

        Raises `subprocess.TimeoutExpired` when the process outlives `timeout`.
        """
        self.process.send_signal(signum)
        return self.process.wait(timeout=timeout)

    def kill(self) -> int:
        """``kill -9``: no shutdown code runs.  Returns the exit status, ``-SIGKILL``."""
        return self.stop(signal.SIGKILL)


def read_log(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as log:
        return log.read()


def start_twistd(
    case: SynchronousTestCase,
    cwd: str,
    *arguments: str,
    log_name: str = "twistd.out",
    timeout: float = START_TIMEOUT,
    tls: ssl.SSLContext | None = None,
    preexec: Callable[[], None] | None = None,
) -> Twistd:
    """Start ``twistd -n --pidfile= ingest ARGUMENTS`` in `cwd` and wait until it serves.

    Its output goes to `log_name` in `cwd` (a restart needs a new name, or
    the old ``listening`` line would be read).  `tls` is the client context
    for the readiness probe of an ``ssl:`` port; `preexec` runs in the child
    before twistd (to set a resource limit, say).  Fails `case` when twistd
    is not installed, exits, or does not answer ``/ping`` within `timeout`
    seconds.
    """
    if TWISTD is None:
        case.fail("twistd is not installed: pip install . first")
    log_path = os.path.join(cwd, log_name)
    log = open(log_path, "wb")
    case.addCleanup(log.close)
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "ingest", *arguments],
        cwd=cwd,
        env=environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )
    case.addCleanup(reap, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LISTENING.search(read_log(log_path))
        if match and pings(int(match.group(1)), tls, deadline):
            return Twistd(process, int(match.group(1)), log_path)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    case.fail(f"twistd did not start:\n{read_log(log_path)}")


def pings(port: int, tls: ssl.SSLContext | None, deadline: float) -> bool:
    """True once ``GET /ping`` on `port` is answered 204: the reactor runs."""
    timeout = max(0.1, deadline - time.monotonic())
    if tls is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    try:
        connection.request("GET", "/ping")
        response = connection.getresponse()
        response.read()
        return response.status == 204
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def reap(process: subprocess.Popen[bytes]) -> None:
    """Kill a service its test left running, and wait for it (no zombie, no open file on a mount)."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=STOP_TIMEOUT)


def self_signed(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1: ``(key path, certificate path)``, PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path = os.path.join(directory, "key.pem")
    certificate_path = os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as key_file:
        key_file.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(certificate_path, "wb") as certificate_file:
        certificate_file.write(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, certificate_path
