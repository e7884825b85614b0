"""When a connection's next timeout falls due and what to do then, pure: one function of its state and now.

The channel (`ingest.protocol`) keeps one timer per connection.  It asks
`next_due` where that timer must fire; when it fires, it asks again, does
what is due, and arms the timer for the next answer.  Traffic touches no
timer: the channel only notes times (the last byte read or answer written,
the first byte of the head in progress) and asks again on the transitions
that can bring a deadline nearer (a head begins, reading resumes, a write
stalls, a close begins).  The timer may fire early (then `CHECK` re-arms
it), never late.

The rules, first match wins:

1. Closing (the channel asked the transport to close): `ABORT` at
   `closing_since` + `close_grace`.  Every path that starts a close, the
   timer's own included, leaves this deadline: a peer that never reads
   cannot hold its connection open.
2. A write stall (the transport's buffer is full: the peer does not read)
   adds `ABORT` at `stalled_since` + `write_grace`.
3. Reading paused by the service (pipeline limit, buffer pressure, the
   stall): the client cannot be late; nothing but rule 2 applies.
4. A head in progress: ``408`` (`TIMEOUT`) at the nearer of its first byte
   + `head` (slowloris) and the last byte + `idle`.
5. A body in progress: ``408`` at the last byte + `idle`.
6. Between requests with no answer owed: `CLOSE` at the last activity +
   `idle`.  Answers owed are the service's delay, not the client's
   idleness: no read deadline while the connection waits for them.
7. Otherwise (answers owed, or reading ended and answers owed): `CHECK`
   again after `idle`.
"""

from __future__ import annotations

from typing import NamedTuple

CHECK, TIMEOUT, CLOSE, ABORT = "check", "timeout", "close", "abort"
"""What is due: look again; answer 408 and close; close quietly; abort the connection."""

IDLE, HEAD, BODY, ENDED = range(4)
"""What the channel is reading: nothing (between requests), a head, a body, or no more requests."""


class Timeouts(NamedTuple):
    """Seconds: `idle` without traffic, `head` for a whole request head, `write_grace` for a
    peer that reads nothing, `close_grace` for a close to complete."""

    idle: float = 60.0
    head: float = 10.0
    write_grace: float = 30.0
    close_grace: float = 10.0


class Due(NamedTuple):
    """The next deadline: at `at` (the clock's seconds) do `action`; `reason` says why (answer, log)."""

    at: float
    action: str
    reason: str = ""


def next_due(
    timeouts: Timeouts,
    now: float,
    reading: int,
    active: float,
    head_began: float | None,
    paused: bool,
    owed: bool,
    stalled_since: float | None,
    closing_since: float | None,
) -> Due:
    """The connection's next deadline (see the module docstring for the rules).

    `reading` is `IDLE`, `HEAD`, `BODY` or `ENDED`; `active` the time of the
    last byte read or answer written; `head_began` the first byte of the
    head in progress; `paused` whether the service stopped reading;
    `owed` whether answers are owed; `stalled_since` when the transport
    stopped taking writes; `closing_since` when the close began.
    """
    if closing_since is not None:
        return Due(closing_since + timeouts.close_grace, ABORT, "the connection did not close in time")
    due = Due(now + timeouts.idle, CHECK)
    if stalled_since is not None:
        due = Due(stalled_since + timeouts.write_grace, ABORT, "the peer has read nothing")
    if paused:
        return due
    if reading == HEAD:
        at = active + timeouts.idle
        reason = "request not completed in time"
        if head_began is not None and head_began + timeouts.head < at:
            at = head_began + timeouts.head
            reason = "request head not received in time"
        read = Due(at, TIMEOUT, reason)
    elif reading == BODY:
        read = Due(active + timeouts.idle, TIMEOUT, "request not completed in time")
    elif reading == IDLE and not owed:
        read = Due(active + timeouts.idle, CLOSE, "idle")
    else:
        return due
    return read if read.at < due.at else due
