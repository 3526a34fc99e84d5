"""Read-your-writes with read replicas: what a connection's next read must already see.

A connection's reads (REQ, COUNT, NEG-OPEN) run inside `reads_for(connection)`, which hands
the store the moment its last answered EVENT was answered; the read router then uses only a
replica that had replayed a primary WAL position sampled after that moment
(cluster/store/replicas.py), else the primary. Every event that was OK'd committed before its
OK, so the next REQ sees it, and a connection that never wrote reads any usable replica.

Two marks per connection, only while reads may go to replicas (`RelayContext.reads_on_replicas`),
kept here (weakly, so a closed connection leaves nothing behind)
rather than on the Connection:
- `event_sent`, when an EVENT is dispatched (cluster/relay/websocket.py);
- `event_answered`, when its OK has been sent (the EVENT verb calls it after answering).
While an EVENT is outstanding (sent after the last answer), its answer time is not known
yet: the connection then reads as if it wrote now, and after WRITE_ANSWER_BOUND seconds as if
its EVENT was answered at the latest then. Without the `event_answered` call a writing
connection therefore reads from the primary for that long after each EVENT: still correct,
only fewer reads on the replicas.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator

from cluster.store.replicas import reading_after

WRITE_ANSWER_BOUND = 60.0
"""Seconds within which an EVENT is answered (pool wait + write statement timeout + payment
checks, with a wide margin): past it, an unanswered EVENT no longer keeps reads on the primary."""

_sent: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
_answered: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()


def event_sent(connection: object) -> None:
    """The connection sent an EVENT (called before it is handled)."""
    _sent[connection] = time.monotonic()


def event_answered(connection: object) -> None:
    """The connection's EVENT has been answered (called after its OK was queued)."""
    _answered[connection] = time.monotonic()


def written_at(connection: object, now: float | None = None) -> float | None:
    """The moment every write this connection was answered for had committed by; None when
    it never sent an EVENT."""
    sent = _sent.get(connection)
    if sent is None:
        return None
    answered = _answered.get(connection)
    if answered is not None and answered >= sent:
        return answered
    now = time.monotonic() if now is None else now
    return min(now, sent + WRITE_ANSWER_BOUND)


@contextlib.contextmanager
def reads_for(connection: object) -> Iterator[None]:
    """Store reads in this block see every write the connection has been answered for."""
    with reading_after(written_at(connection)):
        yield
