"""InfluxData's line-protocol corpus, sent to the service as InfluxDB clients send it.

``tests/conformance/lineproto_corpus.json`` is a copy of the conformance corpus (its ``sources`` name
the repositories and commits): 6,615 bodies from ``influxdata/line-protocol-corpus`` (fuzz cases,
InfluxDB's own ``models/points_test.go``, the line-protocol decoder's tests), each with what InfluxDB
2.x's parser (``models.ParsePointsWithPrecision``) makes of it: 204 when it takes every line, 400
when any line fails, and the points of the lines it takes.

Each case is one ``POST /api/v2/write?precision=...`` through the real stack (`tests.helpers.Stack`:
the channel, the API, the decoder in the pool, the buffer), and agrees when the status is InfluxDB's
and the stored samples are exactly those its points make: one a numeric or boolean field, named
``measurement_field`` (``measurement`` for a field called ``value``), booleans as 1 and 0, integers
as integers, the point's tags, its timestamp or the time of receipt.  String fields store nothing.

Cases marked ``disputed`` (the references disagree, or a rule of ours such as no control characters
decides) are not counted; they still go through the stack, which must answer 204 or 400 to each.
`KEPT_DIFFERENT` lists the counted cases where ingest answers otherwise on purpose, with the reason;
it is empty: every counted case agrees.  All mismatches are reported at once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Stack, parse_answers, post

CORPUS = Path(__file__).parent / "conformance" / "lineproto_corpus.json"

KEPT_DIFFERENT: dict[str, str] = {}
"""Case id -> why ingest answers it otherwise than InfluxDB.  Empty: every counted case agrees."""

Expected = tuple[str, int | float, int | None, dict[str, str]]


def load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(CORPUS.read_text("utf-8"))["cases"]
    return cases


def body_of(case: dict[str, Any]) -> bytes:
    if "input_b64" in case:
        return base64.b64decode(case["input_b64"])
    text: str = case["input"]
    return text.encode("utf-8")


def text_of(value: str | dict[str, str]) -> str:
    """A corpus string; bytes that are not UTF-8 come as ``{"b64": ...}``."""
    if isinstance(value, dict):
        return base64.b64decode(value["b64"]).decode("utf-8", "surrogateescape")
    return value


def expected_samples(case: dict[str, Any]) -> list[Expected]:
    """The samples InfluxDB's points make, in order; a timestamp of None is the time of receipt."""
    samples: list[Expected] = []
    for point in case["expect"]["points"]:
        measurement = text_of(point["measurement"])
        tags = {text_of(key): text_of(value) for key, value in point["tags"]}
        for field in point["fields"]:
            if field["type"] == "string":
                continue
            key = text_of(field["key"])
            value = field["value"]
            if field["type"] == "boolean":
                value = int(value)
            name = measurement if key == "value" else f"{measurement}_{key}"
            samples.append((name, value, point["timestamp"], tags))
    return samples


def outcome(stack: Stack, case: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The status of the case's request on a new connection, and the samples it stored."""
    channel, transport = stack.connect()
    path = b"/api/v2/write?precision=" + case["precision"].encode()
    channel.dataReceived(post(path, body_of(case), b"Content-Type: text/plain; charset=utf-8"))
    stack.settle()
    answers = parse_answers(transport.value())
    channel.connectionLost(None)
    assert len(answers) == 1, (case["id"], transport.value()[:300])
    return answers[0].status, stack.stored()


def agrees(status: int, stored: list[dict[str, Any]], case: dict[str, Any], now_ns: int) -> bool:
    if status != case["expect"]["status"]:
        return False
    want = [
        (name, value, now_ns if timestamp is None else timestamp, tags)
        for name, value, timestamp, tags in expected_samples(case)
    ]
    got = [(sample["name"], sample["value"], sample["timestamp"], sample["tags"]) for sample in stored]
    # Compared with the value's type: 1 (an integer field) is not 1.0 (a float field).
    return [(*sample, type(sample[1])) for sample in got] == [(*sample, type(sample[1])) for sample in want]


class LineProtocolCorpusTests(SynchronousTestCase):
    def test_counted_cases_agree_with_influxdb(self) -> None:
        """Every counted case gets InfluxDB's status and stores exactly the samples of its points."""
        stack = Stack(capacity=10_000_000)
        cases = load_cases()
        counted = mismatches = 0
        report: list[str] = []
        for case in cases:
            if case.get("disputed"):
                continue
            counted += 1
            status, stored = outcome(stack, case)
            # The receipt time is the stack's clock, which stands still.
            now_ns = int(stack.clock.seconds() * 1e9)
            if agrees(status, stored, case, now_ns) == (case["id"] in KEPT_DIFFERENT):
                mismatches += 1
                if len(report) < 50:
                    report.append(
                        f"{case['id']} {body_of(case)[:120]!r}: expected {case['expect']['status']} "
                        f"{expected_samples(case)[:3]}, got {status} {stored[:3]}"
                    )
        self.assertEqual(counted, 6344)
        summary = f"{mismatches} of {counted} counted cases differ:\n"
        self.assertEqual(mismatches, 0, summary + "\n".join(report))

    def test_disputed_cases_are_answered(self) -> None:
        """The disputed cases, not counted, still get 204 or 400 and leave the stack serving."""
        stack = Stack(capacity=10_000_000)
        disputed = [case for case in load_cases() if case.get("disputed")]
        self.assertEqual(len(disputed), 271)
        statuses = {case["id"]: outcome(stack, case)[0] for case in disputed}
        self.assertEqual({status for status in statuses.values()} - {204, 400}, set(), statuses)

    def test_kept_different_are_counted_cases(self) -> None:
        """Each case listed as kept different exists and is counted."""
        counted = {case["id"] for case in load_cases() if not case.get("disputed")}
        self.assertEqual(set(KEPT_DIFFERENT) - counted, set())
