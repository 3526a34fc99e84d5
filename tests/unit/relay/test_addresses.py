"""Who the client is behind proxies (a forwarded address is never exempt), and what invalid
EVENTs cost a client."""

from __future__ import annotations

from cluster.config import Settings, load_settings
from cluster.relay.access import AccessControl
from cluster.relay.addresses import ClientAddress, client_address

# What the shipped compose/k8s configs trust: loopback and the private container networks.
SHIPPED = ["127.0.0.1/32", "::1/128", "10.0.0.0/8", "172.16.0.0/12"]


def test_a_forged_loopback_entry_behind_trusted_hops_is_forwarded_not_direct() -> None:
    # A client reaches nginx (172.18.0.5) through the Docker gateway (172.17.0.1, trusted),
    # having sent `X-Forwarded-For: 127.0.0.1` itself.
    found = client_address("172.18.0.5", "127.0.0.1, 172.17.0.1", SHIPPED)
    assert found == ClientAddress("127.0.0.1", forwarded=True)


def test_the_walk_stops_at_the_first_untrusted_hop() -> None:
    found = client_address("127.0.0.1", "127.0.0.1, 198.51.100.7, 10.0.0.3", SHIPPED)
    assert found == ClientAddress("198.51.100.7", forwarded=True)


def test_a_direct_peer_is_not_forwarded_and_untrusted_peers_headers_are_ignored() -> None:
    assert client_address("127.0.0.1", None, SHIPPED) == ClientAddress("127.0.0.1", False)
    assert client_address("192.0.2.1", "127.0.0.1", SHIPPED) == ClientAddress("192.0.2.1", False)


def test_only_a_direct_peer_in_the_exempt_ranges_is_exempt() -> None:
    access = AccessControl(Settings(), limiter=None)
    assert access.state_for("127.0.0.1").exempt
    assert not access.state_for("127.0.0.1", forwarded=True).exempt
    assert not access.state_for("198.51.100.7").exempt


def test_the_shipped_defaults_trust_and_exempt_loopback_only() -> None:
    limits = load_settings(None, env={}).rate_limits
    assert limits.exempt == ["127.0.0.0/8", "::1/128"]
    assert all(entry.startswith(("127.", "::1")) for entry in limits.trusted_proxies)


async def test_invalid_events_slow_a_connection_then_close_it() -> None:
    settings = load_settings(
        None,
        env={
            "RELAY_RATE_LIMITS__EXEMPT": "[]",
            "RELAY_RATE_LIMITS__INVALID_EVENTS_PER_CONNECTION": "20",
        },
    )
    access = AccessControl(settings, limiter=None)
    state = access.state_for("198.51.100.7")
    verdicts = [await access.note_invalid(state) for _ in range(21)]
    assert verdicts == [False] * 20 + [True]
    assert access.invalid_penalty(access.state_for("198.51.100.8")) == 0.0
    assert 0.0 < access.invalid_penalty(state) <= 1.0


async def test_exempt_clients_are_never_slowed_or_closed_for_invalid_events() -> None:
    access = AccessControl(load_settings(None, env={}), limiter=None)
    state = access.state_for("127.0.0.1")
    assert not any([await access.note_invalid(state) for _ in range(500)])
    assert access.invalid_penalty(state) == 0.0
