"""What a connection's next read must see (cluster/relay/freshness.py)."""

from __future__ import annotations

import gc

from cluster.relay import freshness


class Conn:
    """Stands in for a Connection: the marks only need a weakly referenceable object."""


def test_a_connection_that_never_wrote_reads_anywhere() -> None:
    assert freshness.written_at(Conn()) is None


def test_an_answered_event_counts_from_its_answer() -> None:
    conn = Conn()
    freshness.event_sent(conn)
    freshness.event_answered(conn)
    answered = freshness._answered[conn]
    assert freshness.written_at(conn) == answered


def test_an_unanswered_event_reads_as_a_write_now_until_the_bound() -> None:
    conn = Conn()
    freshness.event_sent(conn)
    sent = freshness._sent[conn]
    assert freshness.written_at(conn, now=sent + 1) == sent + 1
    late = sent + freshness.WRITE_ANSWER_BOUND + 5
    assert freshness.written_at(conn, now=late) == sent + freshness.WRITE_ANSWER_BOUND


def test_an_event_sent_after_the_last_answer_is_outstanding() -> None:
    conn = Conn()
    freshness.event_sent(conn)
    freshness.event_answered(conn)
    freshness.event_sent(conn)
    sent = freshness._sent[conn]
    assert freshness.written_at(conn, now=sent + 2) == sent + 2


def test_closed_connections_leave_nothing_behind() -> None:
    conn = Conn()
    freshness.event_sent(conn)
    freshness.event_answered(conn)
    del conn
    gc.collect()
    assert len(freshness._sent) == 0 or all(not isinstance(k, Conn) for k in freshness._sent)
