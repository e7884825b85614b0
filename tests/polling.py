"""Waiting for a condition in tests on real sockets, processes or threads: poll it, with a deadline.

A test that waits a fixed time for something to happen depends on the
machine's speed: too short on a slow one, wasted on a fast one.  These poll
instead: they return as soon as the condition holds, and fail only past a
deadline generous enough that no working code on any machine comes near it.
`wait_until` polls on a reactor (a trial `TestCase`, the real reactor
running); `block_until` blocks the calling thread (a `SynchronousTestCase`,
a client thread beside the reactor).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

POLL_TIMEOUT = 20.0
"""Seconds a condition may take: only a failure waits this long.  Below the 30 s `timeout` of the
trial test cases that poll, so that a failed wait reports its own message."""
POLL_INTERVAL = 0.005


@inlineCallbacks
def wait_until(
    reactor: IReactorTime, condition: Callable[[], bool], what: str, timeout: float = POLL_TIMEOUT
) -> Generator[Deferred[Any], Any, None]:
    """Fires once `condition()` is true, checked every few milliseconds on `reactor`.

    Fails with `AssertionError` naming `what` past `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        yield deferLater(reactor, POLL_INTERVAL)


def block_until(condition: Callable[[], bool], what: str, timeout: float = POLL_TIMEOUT) -> None:
    """Return once `condition()` is true, sleeping a few milliseconds between checks.

    Raises `AssertionError` naming `what` past `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(POLL_INTERVAL)
