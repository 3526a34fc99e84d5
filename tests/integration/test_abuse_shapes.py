"""Small versions of the abuse suite's attack shapes (loadtest/attacks.py) against a real relay.

Asserts on behaviour, not timings: each attack is answered or refused the way NIP-01 says, or
closed with 1008 when it oversteps, and a legitimate client is still served while and after it
runs. `python -m loadtest.abuse` runs the same shapes at full strength and measures.
"""

from __future__ import annotations

import asyncio

import pytest

from cluster.nostr.signing import Signer
from loadtest.attacks import SHAPES, AttackStats
from tests.client import connect
from tests.services import RelayProcess, RelayStarter

ATTACK_SECONDS = 2.5


@pytest.fixture(scope="module")
def abused_relay(
    tmp_path_factory: pytest.TempPathFactory, relay_env: dict[str, str]
) -> RelayProcess:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("abuse"))
    relay = starter.start(
        workers=1,
        RELAY_RATE_LIMITS__EXEMPT="[]",
        RELAY_RATE_LIMITS__INVALID_EVENTS_PER_CONNECTION="12",
        RELAY_LIMITS__MAX_SUBSCRIPTIONS="20",
    )
    yield relay
    starter.stop_all()


async def attack(relay: RelayProcess, shape: str, source: str) -> AttackStats:
    """Run one attacker for ATTACK_SECONDS, checking a legitimate client meanwhile."""
    stats = AttackStats(shape=shape, source=source)
    stop = asyncio.Event()
    task = asyncio.create_task(SHAPES[shape](relay.url, source, stop, stats))
    await asyncio.sleep(ATTACK_SECONDS / 2)
    signer = Signer()
    async with connect(relay.url) as client:  # from 127.0.0.1, another address
        assert (await client.publish(signer.sign(1, f"during {shape}")))[2] is True
        assert [e["content"] for e in await client.query("mine", {"authors": [signer.pubkey]})]
    await asyncio.sleep(ATTACK_SECONDS / 2)
    stop.set()
    await asyncio.wait_for(task, 20)
    return stats


async def test_an_invalid_event_flood_is_answered_then_closed(abused_relay: RelayProcess) -> None:
    stats = await attack(abused_relay, "invalid_flood", "127.0.1.11")
    assert stats.answers.get("OK invalid", 0) >= 12
    assert stats.closed_by_relay.get("1008", 0) >= 1


async def test_broad_subscriptions_beyond_the_limit_are_closed(abused_relay: RelayProcess) -> None:
    stats = await attack(abused_relay, "broad_subscriptions", "127.0.1.12")
    refused = stats.answers.get("CLOSED blocked", 0) + stats.answers.get("CLOSED rate-limited", 0)
    assert stats.answers.get("EOSE", 0) <= 20 and refused >= 180  # 200 asked for, 20 allowed


async def test_count_floods_and_huge_filters_are_answered(abused_relay: RelayProcess) -> None:
    counted = await attack(abused_relay, "count_flood", "127.0.1.13")
    assert counted.answers.get("COUNT", 0) + counted.answers.get("CLOSED rate-limited", 0) > 0
    huge = await attack(abused_relay, "huge_filters", "127.0.1.14")
    assert sum(huge.answers.values()) > 0  # EOSE, CLOSED or NOTICE: never silence


@pytest.mark.parametrize("shape", ["req_close_churn", "reconnect_storm", "slowloris"])
async def test_churn_storms_and_slow_handshakes_leave_others_served(
    abused_relay: RelayProcess, shape: str
) -> None:
    stats = await attack(abused_relay, shape, f"127.0.1.{20 + len(shape)}")
    assert stats.connections > 0
