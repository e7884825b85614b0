"""A zero-downtime restart end to end: a new ``twistd -n ingest`` takes the port over while the old drains.

The procedure of docs/OPERATIONS.md ("Upgrading", "Without refused
connections"), run against real processes and sockets on 127.0.0.1: the old
ingest serves with ``--reuse-port yes``; a new one starts on the same port
and data directory with the same option; once it serves, the old one gets
SIGTERM.  Meanwhile clients post without pause on keep-alive connections,
each request a batch of uniquely named samples.

The clients behave as real ones do (``http.client``): after an answer that
says ``Connection: close`` they open a new connection for the next request.
That is not an error; a reset, a refused connection, a connection closed
without an answer, or any status but 2xx is.  Afterwards every sample a 2xx
acknowledged must be stored exactly once, in the segments of the two
processes together (one data directory: each process writes segments of its
own names, and neither repairs the other's active segment: `ingest.storage`).

The kernel must move the connections waiting in the old process's accept
queue to the new one when the old one closes its listening socket
(``net.ipv4.tcp_migrate_req = 1``, Linux 5.14 or later), or it resets them.
The test sets it for its run when it runs as root and restores it after;
otherwise it is skipped when the setting is not 1.  With
``INGEST_SWAP_AS_IS=1`` it runs with the setting as it is, to see the resets
without it.

Cost: a few seconds.  Nothing depends on the machine's speed: each step
waits (a poll with a deadline) for a count of acknowledged requests.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
from collections import Counter

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers_twistd import start_twistd, temp_cwd
from tests.polling import block_until
from tests.segments import read_segments
from tests.test_reliability import HOST, JSON, batch

MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"
CLIENTS = 8
"""Keep-alive clients."""
SHORT_CLIENTS = 4
"""Clients that open a connection for each request."""
SAMPLES = 5
"""Samples a request."""
ACKED_PER_STEP = 20
"""Requests acknowledged on each client between the steps of the swap, so that each comes under load."""
JOIN_TIMEOUT = 20.0


class Client(threading.Thread):
    """A client posting without pause until stopped; it reconnects when told ``Connection: close``.

    A keep-alive client keeps its connection until the server closes it; the
    others ask for a new connection for each request (``Connection: close``),
    so that connections are being opened while the old process closes its
    listening socket.

    Any other end of a connection (an exception from ``http.client``) is an
    error: the client records it and stops.  A non-2xx answer is recorded
    and the client goes on.
    """

    def __init__(self, port: int, label: str, keep_alive: bool = True) -> None:
        super().__init__(name=f"swap-client-{label}", daemon=True)
        self.port = port
        self.label = label
        self.headers = JSON if keep_alive else {**JSON, "Connection": "close"}
        self.acked: list[str] = []
        self.answers = 0
        self.statuses: Counter[int] = Counter()
        self.closed_by_server = 0
        """Answers that said ``Connection: close``: the next request went on a new connection."""
        self.error: BaseException | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        number = 0
        try:
            while not self._stopping.is_set():
                names = [f"{self.label}.{number}.{index}" for index in range(SAMPLES)]
                connection.request("POST", "/metrics", batch(names, number), self.headers)
                response = connection.getresponse()
                response.read()
                self.statuses[response.status] += 1
                if response.will_close:
                    self.closed_by_server += 1  # http.client opens a new connection for the next request
                if 200 <= response.status < 300:
                    self.acked += names
                self.answers += 1
                number += 1
        except (OSError, http.client.HTTPException) as error:
            self.error = error
        finally:
            connection.close()


def migration_on(case: SynchronousTestCase) -> None:
    """Make sure ``net.ipv4.tcp_migrate_req`` is 1 for `case` (restored after it), or skip it."""
    if os.environ.get("INGEST_SWAP_AS_IS"):
        return
    try:
        with open(MIGRATE_REQ, encoding="ascii") as setting:
            value = setting.read().strip()
    except OSError:
        raise SkipTest(
            f"no {MIGRATE_REQ}: the kernel (before 5.14) cannot hand queued connections over"
        ) from None
    if value == "1":
        return
    try:
        with open(MIGRATE_REQ, "w", encoding="ascii") as setting:
            setting.write("1")
    except OSError:
        raise SkipTest("net.ipv4.tcp_migrate_req is not 1 and cannot be set (not root)") from None

    def restore() -> None:
        with open(MIGRATE_REQ, "w", encoding="ascii") as setting:
            setting.write(value)

    case.addCleanup(restore)


class SwapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = temp_cwd(self)

    def test_restart_on_the_same_port_loses_no_request(self) -> None:
        """A new ingest on the port and data directory, then SIGTERM to the old one, under load from 8
        keep-alive clients and 4 that connect for each request: no client sees a connection error or a
        non-2xx, each keep-alive one was told to reconnect (Connection: close) by the old one, both
        processes served, and every acknowledged sample is stored exactly once."""
        migration_on(self)
        data_dir = os.path.join(self.cwd, "data")
        common = ("--data-dir", data_dir, "--reuse-port", "yes")
        old = start_twistd(self, self.cwd, "--port", f"tcp:0:interface={HOST}", *common, log_name="old.out")
        clients = [Client(old.port, f"c{n}") for n in range(CLIENTS)]
        clients += [Client(old.port, f"s{n}", keep_alive=False) for n in range(SHORT_CLIENTS)]

        def each_acked(more: int, since: list[int]) -> None:
            block_until(
                lambda: all(
                    c.answers >= start + more or not c.is_alive()
                    for c, start in zip(clients, since, strict=True)
                ),
                f"{more} more answers on each of {len(clients)} clients",
            )

        for client in clients:
            client.start()
        try:
            each_acked(ACKED_PER_STEP, [0] * len(clients))
            new = start_twistd(
                self, self.cwd, "--port", f"tcp:{old.port}:interface={HOST}", *common, log_name="new.out"
            )
            block_until(lambda: "ingest serving on" in new.log(), "the new ingest serving")
            each_acked(ACKED_PER_STEP, [c.answers for c in clients])
            old_status = old.stop(signal.SIGTERM)
            each_acked(ACKED_PER_STEP, [c.answers for c in clients])
        finally:
            for client in clients:
                client.stop()
            for client in clients:
                client.join(JOIN_TIMEOUT)
        self.assertEqual([c.name for c in clients if c.is_alive()], [], "clients still running")
        new_status = new.stop(signal.SIGTERM)

        errors = {c.name: repr(c.error) for c in clients if c.error is not None}
        statuses = sum((c.statuses for c in clients), Counter[int]())
        reconnects = sum(c.closed_by_server for c in clients[:CLIENTS])
        acked = [name for client in clients for name in client.acked]
        stored = Counter(sample["name"] for sample in read_segments(data_dir))
        missing = [name for name in acked if name not in stored]
        duplicated = sorted(name for name, count in stored.items() if count > 1)
        print(
            f"\nswap: {sum(statuses.values())} answers {dict(statuses)}, {reconnects} told to reconnect, "
            f"errors {errors}; acked {len(acked)} samples, {len(acked) - len(missing)} of them stored"
        )
        self.assertEqual(errors, {}, "a client saw its connection fail")
        self.assertEqual(set(statuses), {202}, "a client got an answer other than 202")
        self.assertEqual((old_status, new_status), (-signal.SIGTERM, -signal.SIGTERM), old.log() + new.log())
        self.assertNotIn("shutdown: aborting", old.log(), "the old ingest's drain had to abort a connection")
        self.assertGreaterEqual(reconnects, CLIENTS, "each client was on the old ingest and told to move")
        self.assertEqual(missing[:20], [], f"{len(missing)} acknowledged samples are not stored")
        self.assertEqual(duplicated[:20], [], "samples stored more than once")
        written = [line for line in (old.log() + new.log()).splitlines() if "samples written" in line]
        self.assertEqual(len(written), 2, "both processes stopped and said what they wrote")
        self.assertNotIn(" 0 samples written", "\n".join(written), "each process stored some of the samples")
