"""Per-address budgets (cluster/relay/budgets.py) against a real relay, every address counted.

Each test uses its own 127.0.1.x addresses, so budgets do not carry over between tests; a
second address is always checked to be served as usual while the first is held back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cluster.nostr.signing import Signer
from tests.client import RelayClient, connect
from tests.services import RelayProcess, RelayStarter

MESSAGES_PER_SECOND = 10
BURST = 2 * MESSAGES_PER_SECOND  # cluster/relay/budgets.py MESSAGE_BURST_SECONDS


@pytest.fixture(scope="module")
def budget_relay(
    tmp_path_factory: pytest.TempPathFactory, relay_env: dict[str, str]
) -> Iterator[RelayProcess]:
    starter = RelayStarter(relay_env, tmp_path_factory.mktemp("budgets"))
    relay = starter.start(
        workers=1,
        RELAY_RATE_LIMITS__EXEMPT="[]",
        RELAY_RATE_LIMITS__MESSAGES_PER_SECOND_PER_IP=str(MESSAGES_PER_SECOND),
        RELAY_RATE_LIMITS__QUERY_COST_PER_MINUTE_PER_IP="1000",
        RELAY_RATE_LIMITS__REQS_PER_MINUTE_PER_IP="1000",
        RELAY_LIMITS__MAX_SUBSCRIPTIONS_PER_ADDRESS="5",
        RELAY_LIMITS__MAX_WIDE_FILTERS_PER_ADDRESS="3",
    )
    yield relay
    starter.stop_all()


async def notices_within(client: RelayClient, seconds: float) -> int:
    seen = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await client.receive(timeout=left)
        except TimeoutError:
            break
        assert message[0] == "NOTICE"
        seen += 1
    return seen


async def test_a_message_flood_is_read_only_as_fast_as_its_budget(
    budget_relay: RelayProcess,
) -> None:
    sent = 60
    async with connect(budget_relay.url, source="127.0.1.41") as flooder:
        for _ in range(sent):
            await flooder.ws.send_str("not json")  # each one costs a NOTICE to answer
        early = await notices_within(flooder, 1.0)
        # The budget holds two seconds' worth, then refills at its rate.
        assert BURST <= early <= BURST + 2 * MESSAGES_PER_SECOND
        async with connect(budget_relay.url, source="127.0.1.42") as other:
            started = time.monotonic()
            await other.ws.send_str("not json either")
            assert (await other.receive(timeout=5))[0] == "NOTICE"
            assert time.monotonic() - started < 1.0  # not queued behind the flood
        later = await notices_within(flooder, 8.0)
        assert early + later == sent  # held back, never dropped: the connection lives on
        assert not flooder.ws.closed


async def subscribe(client: RelayClient, sub_id: str, flt: dict[str, object]) -> list[object]:
    await client.send(["REQ", sub_id, flt])
    _, answer = await client.receive_until(lambda m: m[0] in ("EOSE", "CLOSED") and m[1] == sub_id)
    return answer


async def test_wide_filters_and_subscriptions_are_counted_across_connections(
    budget_relay: RelayProcess,
) -> None:
    author = Signer().pubkey
    async with (
        connect(budget_relay.url, source="127.0.1.43") as first,
        connect(budget_relay.url, source="127.0.1.43") as second,
    ):
        for sub_id in ("w1", "w2"):
            assert (await subscribe(first, sub_id, {"kinds": [1], "limit": 1}))[0] == "EOSE"
        assert (await subscribe(second, "w3", {"limit": 1}))[0] == "EOSE"
        refused = await subscribe(second, "w4", {"kinds": [7], "limit": 1})
        assert refused[0] == "CLOSED"
        assert str(refused[2]).startswith("blocked: too many subscriptions without ids")
        # Narrow filters still fit, up to the address's subscription count.
        assert (await subscribe(second, "n1", {"authors": [author], "limit": 1}))[0] == "EOSE"
        assert (await subscribe(second, "n2", {"authors": [author], "limit": 1}))[0] == "EOSE"
        full = await subscribe(second, "n3", {"authors": [author], "limit": 1})
        assert full[0] == "CLOSED" and "too many open subscriptions from your address" in full[2]
        async with connect(budget_relay.url, source="127.0.1.44") as other:
            assert (await subscribe(other, "w", {"kinds": [1], "limit": 1}))[0] == "EOSE"
        # Closing gives the share back.
        await first.send(["CLOSE", "w1"])
        await asyncio.sleep(0.2)
        assert (await subscribe(second, "w5", {"kinds": [1], "limit": 1}))[0] == "EOSE"
    # A closed connection's subscriptions are forgotten with it.
    async with connect(budget_relay.url, source="127.0.1.43") as again:
        for sub_id in ("a1", "a2", "a3"):
            assert (await subscribe(again, sub_id, {"limit": 1}))[0] == "EOSE"


async def test_queries_are_priced_by_their_estimated_rows(budget_relay: RelayProcess) -> None:
    """tests/conftest.py caps limits at 100: {"kinds": [1], "limit": 100} is estimated at
    100 x 1.1 x 4 (no index narrows it) = 440 rows of the address's 1,000 a minute."""
    async with connect(budget_relay.url, source="127.0.1.45") as client:
        for sub_id in ("q1", "q2"):
            assert (await subscribe(client, sub_id, {"kinds": [1], "limit": 100}))[0] == "EOSE"
            await client.send(["CLOSE", sub_id])
        third = await subscribe(client, "q3", {"kinds": [1], "limit": 100})
        assert third[0] == "CLOSED" and str(third[2]).startswith("rate-limited: query budget")
        # Cheap lookups still pass while the budget refills: an id costs one row.
        assert (await subscribe(client, "q4", {"ids": ["ab" * 32]}))[0] == "EOSE"
        await client.send(["COUNT", "c1", {"kinds": [1], "#p": ["cd" * 32]}])
        _, counted = await client.receive_until(lambda m: m[1] == "c1")
        assert counted[0] == "CLOSED"  # a COUNT reads every match: 2,000 rows estimated
        assert str(counted[2]).startswith("blocked: query too expensive")
    async with connect(budget_relay.url, source="127.0.1.46") as rich:
        authors = [Signer().pubkey for _ in range(100)]  # 100 x (1 + 100 x 0.1) = 1,100 rows
        huge = await subscribe(rich, "h", {"authors": authors, "limit": 100})
        assert huge[0] == "CLOSED" and str(huge[2]).startswith("blocked: query too expensive")
        assert (await subscribe(rich, "ok", {"authors": authors[:10], "limit": 100}))[0] == "EOSE"
