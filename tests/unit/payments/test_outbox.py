"""The forwarder's decisions per row, without a database: ack, postpone, dead-letter, release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from cluster.payments.dassie import DassieError, DassieUnavailable
from cluster.payments.outbox import (
    MAX_DELAY,
    forward_batch,
    is_definitive,
    retry_delay,
)
from cluster.store.payments import OutboxEntry

LEASED = datetime(2026, 1, 1, tzinfo=UTC)


def entries(count: int, attempts: int = 0) -> list[OutboxEntry]:
    return [
        OutboxEntry(i, "btc:" + "0" * 24, i, 10, "ab" * 32, attempts, LEASED)
        for i in range(1, count + 1)
    ]


class ScriptedNode:
    """Answers recordClaim per nonce from a script: an exception to raise, or a delay."""

    def __init__(self, script: dict[int, BaseException | float] | None = None) -> None:
        self.script = script or {}
        self.calls: list[int] = []

    async def record_claim(self, channel_id: str, amount: int, nonce: int, event_id: str) -> Any:
        self.calls.append(nonce)
        answer = self.script.get(nonce)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, float):
            await asyncio.sleep(answer)
        return {"duplicate": False}


def far() -> float:
    return asyncio.get_running_loop().time() + 30


def test_retry_delay_doubles_then_caps() -> None:
    assert [retry_delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert retry_delay(50) == MAX_DELAY


@pytest.mark.parametrize(
    ("message", "definitive"),
    [
        ("unknown_channel", True),
        ("insufficient_balance: 10 exceeds the remaining 5", True),
        ("nonce_conflict: nonce 3 of btc:x was recorded for event ab", True),
        ("invalid_input: amount", True),
        ("internal_error: database unavailable", False),
        ("internal_error", False),
        ("invalid_response: payment.recordClaim answered without a result object", False),
    ],
)
def test_only_the_nodes_own_verdicts_are_definitive(message: str, definitive: bool) -> None:
    assert is_definitive(DassieError(message)) is definitive


async def test_all_acknowledged() -> None:
    node = ScriptedNode()
    outcome = await forward_batch(node, entries(3), far())
    assert outcome.acked == [1, 2, 3]
    assert node.calls == [1, 2, 3]
    assert not (outcome.postponed or outcome.dead or outcome.untried)


async def test_node_away_postpones_the_row_and_releases_the_rest_untried() -> None:
    node = ScriptedNode({2: DassieUnavailable("connection refused")})
    batch = entries(4, attempts=3)
    outcome = await forward_batch(node, batch, far())
    assert outcome.acked == [1]
    assert [(e.id, delay) for e, delay, _ in outcome.postponed] == [(2, retry_delay(3))]
    assert outcome.postponed[0][2] == "connection refused"
    assert outcome.untried == batch[2:]
    assert node.calls == [1, 2]  # nothing sent after the outage was seen


async def test_internal_error_is_an_outage_not_a_refusal() -> None:
    node = ScriptedNode({1: DassieError("internal_error: database unavailable")})
    outcome = await forward_batch(node, entries(2), far())
    assert [e.id for e, _, _ in outcome.postponed] == [1]
    assert [e.id for e in outcome.untried] == [2]
    assert outcome.dead == []


async def test_a_refused_row_is_dead_and_the_batch_goes_on() -> None:
    node = ScriptedNode({2: DassieError("unknown_channel")})
    outcome = await forward_batch(node, entries(3), far())
    assert outcome.acked == [1, 3]
    assert [(e.id, error) for e, error in outcome.dead] == [(2, "unknown_channel")]
    assert outcome.postponed == [] and outcome.untried == []


async def test_the_batch_stops_before_its_lease_runs_out() -> None:
    node = ScriptedNode({2: 5.0})  # a node slower than what is left of the lease
    batch = entries(3)
    deadline = asyncio.get_running_loop().time() + 0.2
    outcome = await forward_batch(node, batch, deadline)
    assert outcome.acked == [1]
    assert outcome.untried == batch[1:]  # the cut-off call is retried (recordClaim is idempotent)
    assert node.calls == [1, 2]
    assert asyncio.get_running_loop().time() < deadline + 1
